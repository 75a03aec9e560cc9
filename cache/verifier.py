"""Second stage of the semantic cache: is the cached question's answer valid for the new one?

The first stage (embedding cosine) finds the nearest cached question; cosine alone cannot tell
"turn the alarm on" from "off" or "in 2019" from "in 2020". This stage looks at what differs:

- hard vetoes that generalise beyond any training set: different numbers, a negation present
  in one text only, an antonym swap (on/off, up/down, ...), a different question word;
- a small logistic model over lexical/entity diff features plus the cosine, trained on the
  development pairs (``benchmarks/train_verifier.py``-style code lives in
  ``cache/verifier_train.py``) and shipped as ``verifier_weights.json`` (a few hundred bytes).

``score(a, b, cos)`` returns a probability in [0, 1]; 0.0 when a veto fires. Pure and cheap
(tens of microseconds), safe to call on the event loop.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_FILE = Path(__file__).with_name("verifier_weights.json")

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NUMBER_WORDS = frozenset(
    "zero two three four five six seven eight nine ten eleven twelve twenty thirty forty "
    "fifty hundred thousand million billion".split()
)
_NEGATIONS = frozenset(
    "not no never none nobody nothing nor without cannot can't don't doesn't didn't isn't aren't "
    "wasn't weren't won't wouldn't shouldn't couldn't hasn't haven't hadn't mustn't neither".split()
)
_WH = ("what", "why", "how", "when", "where", "who", "whom", "whose", "which")
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

FEATURES = (
    "bias", "cos", "cos2", "jaccard", "content_jaccard", "unmatched_a", "unmatched_b",
    "entity_diff", "len_ratio", "trigram", "wh_diff", "cos_x_content",
)


@dataclass(frozen=True, slots=True)
class Parsed:
    words: tuple[str, ...]
    lower: frozenset[str]
    content: frozenset[str]
    numbers: frozenset[str]
    negated: bool
    wh: str | None
    entities: frozenset[str]
    trigrams: frozenset[str]


def parse(text: str) -> Parsed:
    words = tuple(_WORD.findall(text))
    lower = [w.lower() for w in words]
    numbers = {n.replace(",", "") for n in _NUMBER.findall(text)}
    numbers |= {w for w in lower if w in _NUMBER_WORDS}
    entities = {w.lower() for i, w in enumerate(words) if i > 0 and w[:1].isupper() and w.lower() not in _STOP}
    wh = next((w for w in lower if w in _WH), None)
    squashed = " ".join(lower)
    return Parsed(
        words=words, lower=frozenset(lower), content=frozenset(w for w in lower if w not in _STOP),
        numbers=frozenset(numbers), negated=sum(w in _NEGATIONS or w.endswith("n't") for w in lower) % 2 == 1,
        wh=wh, entities=frozenset(entities),
        trigrams=frozenset(squashed[i:i + 3] for i in range(max(0, len(squashed) - 2))),
    )


def veto(a: Parsed, b: Parsed) -> str | None:
    """Name of the meaning-changing difference between a and b, or None."""
    if a.numbers and b.numbers and a.numbers != b.numbers:
        return "number"
    if a.negated != b.negated:
        return "negation"
    only_a, only_b = a.lower - b.lower, b.lower - a.lower
    for word in only_a:
        if _ANTONYM_OF.get(word, frozenset()) & only_b:
            return "antonym"
    return None


def _jaccard(x: frozenset[str], y: frozenset[str]) -> float:
    union = len(x | y)
    return len(x & y) / union if union else 1.0


def features(a: Parsed, b: Parsed, cos: float) -> list[float]:
    content_j = _jaccard(a.content, b.content)
    na, nb = max(1, len(a.words)), max(1, len(b.words))
    return [
        1.0, cos, cos * cos, _jaccard(a.lower, b.lower), content_j,
        len(a.content - b.content) / max(1, len(a.content)),
        len(b.content - a.content) / max(1, len(b.content)),
        float(len(a.entities ^ b.entities)), min(na, nb) / max(na, nb),
        _jaccard(a.trigrams, b.trigrams), float(a.wh != b.wh), cos * content_j,
    ]


class Verifier:
    def __init__(self, weights: list[float]) -> None:
        if len(weights) != len(FEATURES):
            raise ValueError(f"expected {len(FEATURES)} weights, got {len(weights)}")
        self._w = weights

    @classmethod
    def load(cls, path: Path = WEIGHTS_FILE) -> Verifier:
        data = json.loads(path.read_text())
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"{path}: feature list does not match this code")
        return cls([float(x) for x in data["weights"]])

    def score_parsed(self, a: Parsed, b: Parsed, cos: float) -> float:
        if veto(a, b) is not None:
            return 0.0
        if a.words and [w.lower() for w in a.words] == [w.lower() for w in b.words]:
            return 1.0  # same words (case/punctuation aside): the same question
        z = sum(w * x for w, x in zip(self._w, features(a, b, cos), strict=True))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def score(self, a: str, b: str, cos: float) -> float:
        return self.score_parsed(parse(a), parse(b), cos)
