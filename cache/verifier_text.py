"""Text side of the verifier: parsing a question and the hard vetoes.

Vetoes are rules that generalise beyond any training set: a number that differs, a negation
present in one text only, an antonym swap (on/off, enable/disable, ...), and a different
question target (why vs how, when vs where, ...). ``veto`` returns the rule's name or None.
Pure functions; cheap enough for the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import NamedTuple, TypeVar

import numpy as np

H = TypeVar("H", bound=Hashable)
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
_NUMBER_WORDS = frozenset(
    "zero two three four five six seven eight nine ten eleven twelve twenty thirty forty "
    "fifty hundred thousand million billion".split()
)
_NEGATIONS = frozenset(
    "not no never none nobody nothing nor without cannot can't don't doesn't didn't isn't aren't "
    "wasn't weren't won't wouldn't shouldn't couldn't hasn't haven't hadn't mustn't neither".split()
)
_WH = ("what", "why", "how", "when", "where", "who", "whom", "whose", "which")
_WH_SET = frozenset(_WH)
_ANTONYMS = (
    ("on", "off"), ("up", "down"), ("open", "close"), ("opened", "closed"), ("enable", "disable"),
    ("enabled", "disabled"), ("start", "stop"), ("increase", "decrease"), ("before", "after"),
    ("more", "less"), ("most", "least"), ("max", "min"), ("maximum", "minimum"), ("buy", "sell"),
    ("add", "remove"), ("in", "out"), ("yes", "no"), ("true", "false"), ("best", "worst"),
    ("first", "last"), ("cheap", "expensive"), ("cheapest", "expensive"), ("high", "low"),
    ("higher", "lower"), ("highest", "lowest"), ("import", "export"), ("win", "lose"),
    ("positive", "negative"), ("lock", "unlock"), ("allow", "deny"), ("accept", "reject"),
    ("upload", "download"), ("encrypt", "decrypt"), ("install", "uninstall"), ("hot", "cold"),
    ("long", "short"), ("fast", "slow"), ("big", "small"), ("large", "small"), ("good", "bad"),
    ("pros", "cons"), ("advantages", "disadvantages"), ("above", "below"), ("inside", "outside"),
    ("north", "south"), ("east", "west"), ("left", "right"), ("male", "female"), ("men", "women"),
    ("man", "woman"), ("boy", "girl"), ("old", "new"), ("older", "newer"), ("push", "pull"),
    ("send", "receive"), ("mute", "unmute"), ("connect", "disconnect"), ("include", "exclude"),
    ("always", "never"), ("legal", "illegal"), ("possible", "impossible"), ("like", "dislike"),
    ("love", "hate"), ("easy", "hard"), ("easiest", "hardest"), ("rich", "poor"),
    ("to", "from"), ("import", "export"), ("encode", "decode"), ("join", "leave"),
)
# Question words that ask for a different thing (a reason is not a method, a time not a place).
_WH_CONFLICT = frozenset(frozenset(p) for p in (
    ("why", "how"), ("why", "what"), ("why", "when"), ("why", "where"), ("why", "who"),
    ("when", "where"), ("who", "where"), ("who", "when"), ("how", "where"), ("how", "who"),
))
_ANTONYM_OF: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYMS:
    _ANTONYM_OF[_a] = _ANTONYM_OF.get(_a, frozenset()) | {_b}
    _ANTONYM_OF[_b] = _ANTONYM_OF.get(_b, frozenset()) | {_a}
_STOP = frozenset(
    "a an the is are was were be been being do does did of to in on at for by with from and or "
    "but if then than so as it its this that these those i you he she we they me my your our "
    "their his her them us can could would should will shall may might must have has had what "
    "why how when where who which whom whose there here some any all about into over under "
    "get got one ones just also very really much many way best good".split()
)


class Parsed(NamedTuple):
    """Immutable; a NamedTuple rather than a frozen dataclass: built once per new text on the
    lookup path, where the frozen dataclass's ``object.__setattr__`` per field cost ~1.5 us."""

    words: tuple[str, ...]
    lower: frozenset[str]
    content: frozenset[str]
    numbers: frozenset[str]
    negated: bool
    wh: str | None
    entities: frozenset[str]
    squashed: str  # the lowered words joined by single spaces (what character trigrams are of)


def parse(text: str) -> Parsed:
    """Set operations and comprehensions rather than generators: this runs once per new
    question on the lookup path."""
    words = tuple(_WORD.findall(text))
    # One ``lower`` for the whole text: words hold no space, so splitting the lowered join
    # gives each word lowered (and the squashed text the trigrams come from).
    squashed = " ".join(words).lower()
    lower = squashed.split(" ") if words else []
    lower_set = frozenset(lower)
    # ``_WORD``'s number branch is the whole number pattern (its letter branch never takes a
    # digit), so the words already hold the numbers: one regex pass per text, not two.
    numbers = {w.replace(",", "") for w in words if w[0].isdigit()} | (lower_set & _NUMBER_WORDS)
    entities = {w.lower() for w in words[1:] if w[:1].isupper()} - _STOP
    asked = lower_set & _WH_SET  # the first question word in order; a scan only if several
    wh = None
    if len(asked) == 1:
        wh = next(iter(asked))
    elif asked:
        wh = next(w for w in lower if w in asked)
    if "n't" in squashed:
        negations = [w for w in lower if w in _NEGATIONS or w.endswith("n't")]
    else:
        negations = [w for w in lower if w in _NEGATIONS]
    return Parsed(
        words=words, lower=lower_set, content=lower_set - _STOP, numbers=frozenset(numbers),
        negated=len(negations) % 2 == 1, wh=wh, entities=frozenset(entities), squashed=squashed,
    )


def trigram_sets(squashed: list[str]) -> list[frozenset[int]]:
    """Each text's character trigrams, a trigram as one int (its 3 code points, 21 bits each:
    one to one with the 3-character string, so every Jaccard is the strings' one). One numpy
    pass over the batch instead of a 3-character string object per trigram (~5 us per text)."""
    points = np.frombuffer("".join(squashed).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    codes = ((points[:-2] << 42) | (points[1:-1] << 21) | points[2:]).tolist()  # window at each start
    out, start = [], 0
    for text in squashed:  # a text's windows start at start .. start + len - 3
        out.append(frozenset(codes[start:start + len(text) - 2]) if len(text) >= 3 else frozenset())
        start += len(text)
    return out


def veto(a: Parsed, b: Parsed) -> str | None:
    """Name of the meaning-changing difference between a and b, or None."""
    if a.numbers and b.numbers and a.numbers != b.numbers:
        return "number"
    if a.negated != b.negated:
        return "negation"
    if a.wh and b.wh and frozenset((a.wh, b.wh)) in _WH_CONFLICT:
        return "question"
    only_a, only_b = a.lower - b.lower, b.lower - a.lower
    for word in only_a:
        if _ANTONYM_OF.get(word, frozenset()) & only_b:
            return "antonym"
    return None


def jaccard(x: frozenset[H], y: frozenset[H]) -> float:
    # |x | y| counted, not built: the union set was most of the cost (4 per scored pair).
    both = len(x & y)
    union = len(x) + len(y) - both
    return both / union if union else 1.0
