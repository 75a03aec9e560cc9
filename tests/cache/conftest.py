"""Cache fixtures: one static embedder per test session (distilled once per machine and kept
in ~/.cache/turnout), and a unique Redis namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from cache.embedders import Embedder, StaticEmbedder
from cache.stores import redis_client

REDIS_URL = os.environ.get("TURNOUT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return StaticEmbedder.load_or_distill()


@pytest.fixture
def namespace() -> str:
    return f"turnout-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis(namespace: str) -> AsyncIterator[Redis]:
    client = redis_client(REDIS_URL)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=namespace + "*"):
            await client.delete(key)
        await client.aclose()
