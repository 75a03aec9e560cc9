"""The batched verifier (what the cache worker runs) gives the pair-by-pair numbers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from cache.embedders import Embedder, StaticEmbedder
from cache.verifier import Verifier
from cache.verifier_batch import BatchVerifier
from tests.cache.chat_pairs import HARD_NEGATIVES, PARAPHRASES

ODD = [("What is it?", "What is this?"), ("?", "How?"), ("How do I cook rice", "how do i cook rice?"),
       ("Why is the sky blue?", "Why is the sky blue during the day but black at night?")]


@pytest.fixture(scope="module")
def verifier(embedder: Embedder) -> Verifier:
    assert isinstance(embedder, StaticEmbedder)
    return Verifier.load(embedder)


def test_batch_scores_equal_single_pair_scores(verifier: Verifier, embedder: Embedder) -> None:
    assert isinstance(embedder, StaticEmbedder)
    pairs = [*PARAPHRASES, *HARD_NEGATIVES, *ODD]
    batch = BatchVerifier(verifier)
    cached = batch.prepare_many([a for a, _ in pairs], remember=True)
    news = [b for _, b in pairs]
    queries = batch.prepare_many(news, embedder.token_ids(news))
    got = batch.score_pairs(list(zip(cached, queries, strict=True)))
    want = np.asarray([verifier.score(a, b) for a, b in pairs], dtype=np.float32)
    assert np.allclose(got, want, atol=1e-5)
    assert (got == 0.0).sum() >= 10 and (got == 1.0).sum() >= 1  # vetoes and equal wording included


def test_fast_token_ids_match_the_tokenizer(embedder: Embedder) -> None:
    assert isinstance(embedder, StaticEmbedder)
    texts = ["Hello, World! 3.5 $x_y <a> {b} ~c` don't", "caf\u00e9 re\u0301sume\u0301", "tabs\tand\nlines",
             "", "   ", "C++ vs. C#: which is better?", "e-mail @home #1 100%"]
    want = [e.ids for e in embedder.tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert embedder.token_ids(texts) == want
    vecs = embedder.encode(texts)
    assert np.allclose(np.linalg.norm(vecs[[0, 1, 2, 5, 6]], axis=1), 1.0, atol=1e-5)
    assert not vecs[3].any()  # no tokens: zero vector, never NaN


DEV = Path("/work/shared/data/cache/qqp-pairs-dev.jsonl")


@pytest.mark.skipif(not DEV.exists(), reason="QQP dev pairs not on this machine")
def test_batch_scores_equal_unbatched_scores_on_dev_pairs(verifier: Verifier, embedder: Embedder) -> None:
    """Held-out QQP rows, in worker-sized batches of 16: the vectorised path (sparse pooling,
    block-masked alignment, stacked families) against ``Verifier.score`` pair by pair."""
    assert isinstance(embedder, StaticEmbedder)
    with DEV.open() as f:
        rows = [json.loads(line) for line in itertools.islice(f, 30000, 30320)]
    batch = BatchVerifier(verifier)
    got: list[float] = []
    for start in range(0, len(rows), 16):
        part = rows[start:start + 16]
        cached = batch.prepare_many([r["text_a"] for r in part], remember=True)
        news = [r["text_b"] for r in part]
        got.extend(batch.score_pairs(list(zip(cached, batch.prepare_many(news, embedder.token_ids(news)),
                                              strict=True))).tolist())
    want = [verifier.score(r["text_a"], r["text_b"]) for r in rows]
    assert np.allclose(got, want, rtol=0, atol=2e-6), np.abs(np.subtract(got, want)).max()
    assert 0.0 < np.mean(np.asarray(got) >= verifier.default_threshold) < 1.0
