from __future__ import annotations

import asyncio

import numpy as np

from cache.batcher import BatchingEmbedder
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
