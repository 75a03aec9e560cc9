from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from cache.build import build_cache
from cache.embedders import Embedder
from cache.service import TurnoutCache, cacheable_answer
from configs.cache import CacheConfig, RouteCacheConfig, SemanticConfig

from .conftest import REDIS_URL

ANSWER: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


def ask(text: str, **over: Any) -> dict[str, Any]:
    return {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}], **over}


def config(**over: Any) -> CacheConfig:
    return CacheConfig(**{"semantic_enabled": True, "semantic": SemanticConfig(threshold=0.5), **over})


Factory = Callable[..., Any]


@pytest.fixture
async def make(embedder: Embedder) -> AsyncIterator[Factory]:
    async with AsyncExitStack() as stack:
        async def factory(cfg: CacheConfig, redis_url: str | None = None) -> tuple[TurnoutCache, CollectorRegistry]:
            registry = CollectorRegistry()
            cache = await stack.enter_async_context(build_cache(cfg, registry, redis_url, embedder))
            return cache, registry
        yield factory


async def test_exact_hit_and_nondeterministic_skipped(make: Factory) -> None:
    cache, registry = await make(config(semantic_enabled=False))
    assert await cache.lookup("t", "m", ask("hello")) is None
    assert await cache.put("t", "m", ask("hello"), ANSWER) == ("exact",)
    hit = await cache.lookup("t", "m", ask("hello", stream=True))
    assert hit is not None and hit.kind == "exact" and hit.body == ANSWER
    sampled = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert await cache.put("t", "m", sampled, ANSWER) == ()
    assert registry.get_sample_value("turnout_cache_lookups_total", {"kind": "exact", "result": "hit"}) == 1


async def test_route_policy_opts_in_to_sampled_answers(make: Factory) -> None:
    cache, _ = await make(config(semantic_enabled=False, routes={"m": RouteCacheConfig(nondeterministic=True)}))
    sampled = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert await cache.put("t", "m", sampled, ANSWER) == ("exact",)
    assert await cache.lookup("t", "m", sampled) is not None


async def test_controls(make: Factory) -> None:
    cache, _ = await make(config(semantic_enabled=False))
    assert await cache.put("t", "m", ask("q"), ANSWER, frozenset({"no-store"})) == ()
    await cache.put("t", "m", ask("q"), ANSWER)
    assert await cache.lookup("t", "m", ask("q"), frozenset({"bypass"})) is None
    assert await cache.lookup("t", "m", ask("q"), frozenset({"refresh"})) is None
    assert await cache.lookup("t", "m", ask("q")) is not None


def test_uncacheable_answers() -> None:
    truncated = {**ANSWER, "choices": [{**ANSWER["choices"][0], "finish_reason": "length"}]}
    tool = {**ANSWER, "choices": [{"index": 0, "finish_reason": "tool_calls",
                                   "message": {"role": "assistant", "tool_calls": [{"id": "x"}]}}]}
    assert cacheable_answer(ANSWER, False)
    assert not cacheable_answer(truncated, True)
    assert not cacheable_answer({"error": {"message": "x"}}, False)
    assert not cacheable_answer(tool, False) and cacheable_answer(tool, True)


async def test_semantic_hit_rejects_near_miss_and_feedback_evicts(make: Factory) -> None:
    cache, registry = await make(config())
    assert await cache.put("t", "m", ask("How can I learn Python quickly?"), ANSWER) == ("exact", "semantic")
    hit = await cache.lookup("t", "m", ask("how can i learn python quickly"))
    assert hit is not None and hit.kind == "semantic"
    await cache.put("t", "m", ask("Turn the alarm on"), ANSWER)
    assert await cache.lookup("t", "m", ask("Turn the alarm off")) is None
    assert await cache.feedback("t", hit.key, correct=False)
    assert await cache.lookup("t", "m", ask("how can i learn python quickly")) is None
    assert registry.get_sample_value("turnout_cache_false_hits_total", {"kind": "semantic"}) == 1
    assert not await cache.feedback("other-tenant", hit.key, correct=False)


async def test_tenants_never_share(make: Factory) -> None:
    cache, _ = await make(config())
    await cache.put("tenant-a", "m", ask("What is the capital of France?"), ANSWER)
    assert await cache.lookup("tenant-a", "m", ask("What is the capital of France?")) is not None
    assert await cache.lookup("tenant-b", "m", ask("What is the capital of France?")) is None
    assert await cache.lookup("tenant-b", "m", ask("what is the capital of france")) is None


async def test_invalidate_by_tenant_model_and_key(make: Factory) -> None:
    cache, _ = await make(config())
    await cache.put("t", "m", ask("first question here"), ANSWER)
    await cache.put("t", "m2", ask("second question here"), ANSWER)
    hit = await cache.lookup("t", "m2", ask("second question here"))
    assert hit is not None
    assert await cache.invalidate("u", key=hit.key) == 0  # another tenant's key: refused
    assert await cache.invalidate("t", key=hit.key) == 1
    assert await cache.invalidate("t", model="m") >= 1
    assert await cache.lookup("t", "m", ask("first question here")) is None


@pytest.mark.redis
async def test_two_instances_share_redis_and_stay_in_step(make: Factory, redis: Redis, namespace: str) -> None:
    cfg = config(store="redis", namespace=namespace)
    one, _ = await make(cfg, REDIS_URL)
    await one.put("t", "m", ask("What is the tallest mountain on Earth?"), ANSWER)
    two, _ = await make(cfg, REDIS_URL)  # starts later: loads persisted index entries
    exact = await two.lookup("t", "m", ask("What is the tallest mountain on Earth?"))
    assert exact is not None and exact.kind == "exact"
    assert await two.lookup("t", "m", ask("what is the tallest mountain on earth")) is not None
    await two.put("t", "m", ask("How do I boil an egg perfectly?"), ANSWER)  # published live
    for _ in range(50):
        if len(one.semantic.index) == 2:
            break
        await asyncio.sleep(0.02)
    hit = await one.lookup("t", "m", ask("how do i boil an egg perfectly"))
    assert hit is not None and hit.kind == "semantic"
    assert await one.lookup("other", "m", ask("How do I boil an egg perfectly?")) is None
    assert await one.feedback("t", hit.key, correct=False)
    for _ in range(50):
        if len(two.semantic.index) == 1:
            break
        await asyncio.sleep(0.02)
    assert await two.lookup("t", "m", ask("how do i boil an egg perfectly")) is None
