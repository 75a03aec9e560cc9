"""The cache adapter inside real gateway servers on loopback (mock upstream, real Redis)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from backends.mock_server import MockServerHandle
from cache.embedders import StaticEmbedder
from configs import load_text
from gateway.app import create_app
from gateway.keys import RESPONSE_CACHE
from gateway.server import reload
from tests.conftest import GatewayFactory, openai_yaml

REDIS_URL = os.environ.get("TURNOUT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def cache_yaml(upstream: str, namespace: str, semantic: bool = False) -> str:
    sem = "\n  semantic: {threshold: 0.5}" if semantic else ""
    return openai_yaml(upstream) + f"""
redis: {{url: "{REDIS_URL}"}}
cache:
  store: redis
  namespace: "{namespace}"
  exact: {{ttl: 1m}}{sem}
"""


async def chat(http: aiohttp.ClientSession, base: str, text: str, **extra: Any) -> tuple[str | None, Any]:
    headers = extra.pop("headers", {})
    body = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": text}], **extra}
    async with http.post(f"{base}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return resp.headers.get("x-turnout-cache"), await (resp.json() if not extra.get("stream") else resp.text())


async def until_hit(http: aiohttp.ClientSession, base: str, text: str) -> tuple[str | None, Any]:
    for _ in range(50):  # the write runs in the background
        state, body = await chat(http, base, text)
        if state is not None:
            return state, body
        await asyncio.sleep(0.02)
    return None, None


@pytest.mark.redis
async def test_two_gateways_share_redis(gateway: GatewayFactory, mock_upstream: MockServerHandle,
                                        http: aiohttp.ClientSession) -> None:
    ns = f"turnout-test:{uuid.uuid4().hex[:12]}:"
    one = await gateway(cache_yaml(mock_upstream.url, ns))
    two = await gateway(cache_yaml(mock_upstream.url, ns))
    state, first = await chat(http, one, "What is the speed of light?")
    assert state is None
    state, second = await until_hit(http, two, "What is the speed of light?")
    assert state == "hit-exact" and second["choices"] == first["choices"]
    state, _ = await chat(http, two, "What is the speed of light?", headers={"x-turnout-cache": "bypass"})
    assert state is None
    _, streamed = await chat(http, two, "What is the speed of light?", stream=True,
                             stream_options={"include_usage": True})
    assert '"usage"' in streamed and streamed.rstrip().endswith("data: [DONE]")


@pytest.mark.redis
async def test_semantic_hit_and_admin_routes(gateway: GatewayFactory, mock_upstream: MockServerHandle,
                                             http: aiohttp.ClientSession) -> None:
    ns = f"turnout-test:{uuid.uuid4().hex[:12]}:"
    base = await gateway(cache_yaml(mock_upstream.url, ns, semantic=True))
    await chat(http, base, "How do I reset my password?")
    state, _ = await until_hit(http, base, "how do i reset my password")
    assert state == "hit-semantic"
    state, _ = await chat(http, base, "How do I not reset my password?")
    assert state is None  # negation: second stage rejects
    async with http.post(f"{base}/v1/cache/invalidate", json={"model": "chat"}) as resp:
        assert resp.status == 200 and (await resp.json())["removed"] >= 1
    state, _ = await chat(http, base, "how do i reset my password")
    assert state is None
    async with http.post(f"{base}/v1/cache/feedback", json={"key": 3}) as resp:
        assert resp.status == 400


@pytest.mark.redis
async def test_cache_metrics_are_served_on_metrics(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    base = await gateway(cache_yaml(mock_upstream.url, f"t-{uuid.uuid4().hex[:8]}:"))
    async with aiohttp.ClientSession() as http:
        await chat(http, base, "what is metered?")
        assert (await until_hit(http, base, "what is metered?"))[0] == "hit-exact"
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    assert 'turnout_cache_lookups_total{kind="exact",result="hit"}' in text
    assert "turnout_cache_stores_total" in text



class RecordingCache:
    """Stands in for TurnoutCache: records the keys the adapter hands it."""

    def __init__(self) -> None:
        self.keys: list[Any] = []

    async def lookup(self, tenant: str, model: str, body: Any, control: Any, key: Any) -> None:
        self.keys.append(key)

    async def put(self, tenant: str, model: str, body: Any, answer: Any, control: Any, key: Any) -> tuple[str, ...]:
        self.keys.append(key)
        return ()


async def test_lookup_and_store_share_one_derived_key() -> None:
    from cache.keys import request_key
    from gateway.cache_adapter import CacheAdapter
    from gateway.interfaces import CacheQuery

    pending: list[Any] = []
    recording = RecordingCache()
    adapter = CacheAdapter(SimpleNamespace(cache=recording), pending.append)  # type: ignore[arg-type]
    body = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    query = CacheQuery("t1", "chat", body, False)
    assert await adapter.lookup(query) is None
    adapter.store(query, {"choices": []})
    await asyncio.gather(*pending)
    first, second = recording.keys
    assert first is second  # derived once, reused by the store
    assert first == request_key("t1", "chat", body)


async def test_a_reload_applies_cache_policies(aiohttp_client: Callable[..., Any], mock_upstream: MockServerHandle,
                                               tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = ("server: {grace_period: 10ms}\n" + openai_yaml(mock_upstream.url)
            + "cache:\n  store: memory\n  exact: {ttl: 1m}\n  routes:\n    chat: {exact: false}\n")
    client = await aiohttp_client(create_app(load_text(text)))
    body = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": "What is a reload?"}]}

    async def state() -> str | None:
        for _ in range(50):  # the write runs in the background
            resp = await client.post("/v1/chat/completions", json=body)
            assert resp.status == 200
            found: str | None = resp.headers.get("x-turnout-cache")
            if found is not None:
                return found
            await asyncio.sleep(0.01)
        return None

    assert await state() is None  # the route opts out of the exact cache
    path = tmp_path / "reloaded.yaml"
    path.write_text(text.replace("chat: {exact: false}", "chat: {exact: true}"))
    assert await reload(client.app, str(path))
    assert await state() == "hit-exact"

    # A store setting is not a policy: logged, kept until a restart; the policy part still applies.
    path.write_text(text.replace("store: memory", "store: memory\n  max_bytes: 1MiB"))
    with caplog.at_level(logging.WARNING, logger="turnout.cache"):
        assert await reload(client.app, str(path))
    assert "apply after a restart" in caplog.text
    assert client.app[RESPONSE_CACHE].cache.cfg.max_bytes == 256 * 1024 * 1024
    assert await state() is None

    # Semantic matching needs an index built at startup: turning it on by reload only warns.
    path.write_text(text + "  semantic: {threshold: 0.5}\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="turnout.cache"):
        assert await reload(client.app, str(path))
    assert "its index starts after a restart" in caplog.text


TWO_PROCESS_CACHE = """
cache:
  store: redis
  namespace: "{prefix}cache:"
  exact: {ttl: 5m}
  semantic: {threshold: 0.5}
"""


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_two_gateway_processes_share_answers_within_a_tenant_only(tmp_path: Path) -> None:
    from tests.admin.cluster import running_cluster
    from tests.admin.test_cluster import new_key

    def body(text: str) -> dict[str, Any]:
        return {"model": "small", "temperature": 0, "messages": [{"role": "user", "content": text}]}

    async def ask(http: aiohttp.ClientSession, port: int, key: str, text: str,
                  control: str | None = None) -> tuple[str | None, str]:
        headers = {"Authorization": f"Bearer {key}", **({"x-turnout-cache": control} if control else {})}
        async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body(text),
                             headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer_id: str = (await resp.json())["id"]  # a cached answer keeps its upstream id
            return resp.headers.get("x-turnout-cache"), answer_id

    async def until_hit(http: aiohttp.ClientSession, port: int, key: str, text: str) -> tuple[str | None, str]:
        # The write and the index update reach the other process in the background. Polls are
        # no-store: a miss while they are on their way must not store a competing answer.
        for _ in range(150):
            state, answer_id = await ask(http, port, key, text, "no-store")
            if state is not None:
                return state, answer_id
            await asyncio.sleep(0.02)
        return None, ""

    # Each gateway loads the static embedder at startup; on a fresh machine the first load
    # distils it (~30 s, longer than a gateway's startup timeout), so do that once here.
    await asyncio.to_thread(StaticEmbedder.load_or_distill)
    with running_cluster(tmp_path, gateways=2, cache=TWO_PROCESS_CACHE) as (_, (one, two)):
        async with aiohttp.ClientSession() as http:
            key_a, key_b = await new_key(http, one, "tenant-a"), await new_key(http, one, "tenant-b")
            question, paraphrase = "How do I reset my password?", "how do i reset my password"
            state, a_id = await ask(http, one, key_a, question)
            assert state is None
            assert await until_hit(http, two, key_a, question) == ("hit-exact", a_id)
            assert await until_hit(http, two, key_a, paraphrase) == ("hit-semantic", a_id)
            # Tenant B, same words and paraphrased, through both processes: never A's answer. Its
            # first request is a miss; later ones may hit B's own entry, stored meanwhile.
            seen = [await ask(http, port, key_b, text)
                    for port, text in ((two, question), (one, paraphrase), (two, paraphrase), (one, question))]
            assert seen[0][0] is None and all(b_id != a_id for _, b_id in seen)
            state, b_id = await until_hit(http, two, key_b, question)
            assert state == "hit-exact" and b_id != a_id
