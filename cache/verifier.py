"""Second stage of the semantic cache: is the cached question's answer valid for the new one?

The first stage (embedding cosine) finds the nearest cached questions; cosine alone cannot tell
"turn the alarm on" from "off" or "in 2019" from "in 2020". This stage decides, in order:

1. hard vetoes (``cache/verifier_text.py``): a different number, a negation in one text
   only, an antonym swap, a different question target (why vs how) → 0.0;
2. the same words up to case, punctuation, contractions and neutral words ("how do I" =
   "how can I", "my"/"the") → 1.0 (96% duplicates in the QQP training rows);
3. otherwise a learned pair model (``cache/verifier_model.py``, trained on rows 0–29,999 of
   the QQP development pairs by ``cache/verifier_train.py``) → a probability.

``score(a, b)`` is pure and cheap (~0.1 ms per pair, prepared texts memoised), safe on the
event loop. The model file carries the default operating point (``default_threshold``),
chosen on training data by held-back validation.
"""

from __future__ import annotations

from pathlib import Path

from cache.embedders import StaticEmbedder
from cache.verifier_model import MODEL_FILE, PairModel, Prepared
from cache.verifier_text import Parsed, jaccard, parse, veto

__all__ = ["MODEL_FILE", "Parsed", "Verifier", "jaccard", "parse", "veto"]


class Verifier:
    def __init__(self, model: PairModel) -> None:
        self.model = model

    @classmethod
    def load(cls, static: StaticEmbedder | None = None, path: Path = MODEL_FILE,
             memo_size: int = 8192) -> Verifier:
        """``static``: share an already loaded static embedder (its token table).
        ``memo_size``: cached questions kept prepared (~20-27 KB each); lookups against a
        question outside it prepare it again (about doubling their cost)."""
        return cls(PairModel.load(static, path, memo_size))

    @property
    def default_threshold(self) -> float:
        return self.model.threshold

    def prepare(self, text: str) -> Prepared:
        """For a one-off text (a lookup): memo hits are used, nothing is kept."""
        return self.model.space.prepare(text)

    def remember(self, text: str) -> Prepared:
        """For a cached question: prepared once and kept (bounded LRU), so lookups against it
        only pay for the new text."""
        prepared = self.model.space.prepare(text, remember=True)
        self.model.state(prepared, remember=True)
        return prepared

    def score_prepared(self, a: Prepared, b: Prepared) -> float:
        if veto(a.parsed, b.parsed) is not None:
            return 0.0
        if a.canonical and a.canonical == b.canonical:
            return 1.0  # same words up to case, punctuation, contractions and neutral words
        return self.model.score(a, b)

    def score(self, a: str, b: str) -> float:
        return self.score_prepared(self.prepare(a), self.prepare(b))
