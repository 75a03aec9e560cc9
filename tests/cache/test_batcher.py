from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cache.batcher import BatchingEmbedder, MicroBatcher, worker_pool
from cache.embedders import Embedder


async def test_concurrent_requests_share_batches(embedder: Embedder) -> None:
    batcher = BatchingEmbedder(embedder, max_batch=64)
    texts = [f"distinct question {i} about topic {i * 7}" for i in range(32)]
    vectors = await asyncio.gather(*(batcher.embed(t) for t in texts))
    assert batcher.batches <= 2  # 32 concurrent callers, not 32 encode calls
    expected = embedder.encode(texts)
    assert np.allclose(np.stack(vectors), expected, atol=1e-5)
    again = await batcher.embed(texts[0])  # memoised
    assert batcher.batches <= 2 and np.allclose(again, expected[0])
    await batcher.aclose()


async def test_micro_batcher_propagates_errors_and_keeps_serving() -> None:
    calls: list[list[int]] = []

    def work(items: list[int]) -> list[int]:
        calls.append(items)
        if -1 in items:
            raise ValueError("bad item")
        return [i * 2 for i in items]

    pool = worker_pool()
    batcher: MicroBatcher[int, int] = MicroBatcher(work, pool, max_batch=4)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)] and [len(c) for c in calls] == [4, 4, 2]
    with pytest.raises(ValueError, match="bad item"):
        await batcher.submit(-1)
    assert await batcher.submit(3) == 6
    pool.shutdown()


def test_worker_runs_openmp_and_blas_on_one_thread() -> None:
    """faiss's OpenMP team spun on the second core after each search (~200 us of CPU per
    lookup outside the worker); OpenMP's thread count is per calling thread, so the worker
    itself must be limited."""
    import faiss  # noqa: F401  (loads libgomp and faiss's OpenBLAS)
    from threadpoolctl import threadpool_info

    pool = worker_pool()
    try:
        info = pool.submit(threadpool_info).result()
    finally:
        pool.shutdown()
    assert {i["user_api"] for i in info} >= {"openmp", "blas"}
    assert all(i["num_threads"] == 1 for i in info), info
