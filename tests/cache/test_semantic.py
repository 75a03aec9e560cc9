"""The semantic lookup runs as one worker step per batch of concurrent callers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from cache.batcher import BatchingEmbedder
from cache.embedders import Embedder, StaticEmbedder
from cache.index import SemanticIndex
from cache.semantic import LOOKUP_BATCH, SemanticCache
from cache.stores import MemoryStore
from cache.verifier import Verifier
from tests.cache.chat_pairs import HARD_NEGATIVES, PARAPHRASES


async def test_concurrent_lookups_are_batched_and_match_one_by_one(embedder: Embedder) -> None:
    assert isinstance(embedder, StaticEmbedder)
    batcher = BatchingEmbedder(embedder)
    sem = SemanticCache(MemoryStore(1 << 20), batcher, SemanticIndex(batcher.dim, 1000),
                        Verifier.load(embedder), 0.5)
    pairs = [*PARAPHRASES, *HARD_NEGATIVES][:32]
    for i, (a, _) in enumerate(pairs):
        await sem.put(f"s{i}", a, a.encode(), 60.0)
    before = sem.batches
    together = await asyncio.gather(*(sem.probe(f"s{i}", b) for i, (_, b) in enumerate(pairs)))
    assert sem.batches - before == -(-len(pairs) // LOOKUP_BATCH)  # not one step per caller
    alone = [await sem.probe(f"s{i}", b) for i, (_, b) in enumerate(pairs)]
    assert [c is None for c in together] == [c is None for c in alone]
    assert np.allclose([c.score if c else -1.0 for c in together], [c.score if c else -1.0 for c in alone], atol=1e-5)
    assert sum(c is not None for c in together) >= len(pairs) // 2
    hit = await sem.lookup("s0", PARAPHRASES[0][0], 0.9)  # same words: served
    assert hit is not None and hit[1] == PARAPHRASES[0][0].encode()
    await batcher.aclose()


async def test_lookup_without_verifier_scores_by_cosine(embedder: Embedder) -> None:
    batcher = BatchingEmbedder(embedder)
    sem = SemanticCache(MemoryStore(1 << 20), batcher, SemanticIndex(batcher.dim, 10), None, 0.8)
    await sem.put("s", "How do I reset my password?", b"x", 60.0)
    cand = await sem.probe("s", "how do I reset my password")
    assert cand is not None and cand.score == cand.similarity > 0.8
    assert await sem.probe("other", "how do I reset my password") is None
    await batcher.aclose()


async def test_model_code_runs_in_the_worker_thread_only(embedder: Embedder) -> None:
    """The event loop only enqueues and awaits: embedding, search and the verifier run in the
    cache's worker thread."""
    assert isinstance(embedder, StaticEmbedder)
    batcher = BatchingEmbedder(embedder)
    sem = SemanticCache(MemoryStore(1 << 20), batcher, SemanticIndex(batcher.dim, 10),
                        Verifier.load(embedder), 0.5)
    threads: set[str] = set()
    batch = sem._batch
    assert batch is not None
    score, prepare = batch.score_pairs, batch.prepare_many

    def spy_score(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return score(*args, **kwargs)

    def spy_prepare(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return prepare(*args, **kwargs)

    batch.score_pairs, batch.prepare_many = spy_score, spy_prepare  # type: ignore[method-assign]
    await sem.put("s", "How do I cook rice?", b"x", 60.0)
    await asyncio.gather(*(sem.probe("s", q) for q in ("how should I cook rice", "How do I cook rice fast?")))
    assert threads and all(name.startswith("turnout-cache") for name in threads), threads
    await batcher.aclose()
