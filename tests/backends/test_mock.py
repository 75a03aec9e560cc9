"""The in-process mock backend: Protocol conformance, timing, and failures as real errors."""

from __future__ import annotations

import asyncio
import time
from random import Random
from typing import Any

import aiohttp
import orjson
import pytest

from backends.base import BackendRequest, Chunk, EmbeddingRequest, SupportsEmbeddings
from backends.errors import BackendHTTPError, BackendProtocolError, BackendTimeout, BackendUnavailable
from backends.mock import LoadGauges, MockBackend
from backends.registry import build_backend, supports_embeddings
from configs import load_text
from configs.schema import BackendConfig, MockSpec, Timeouts

BODY = {"model": "up-model", "messages": [{"role": "user", "content": "hi there"}],
        "stream_options": {"include_usage": True}}


def make(spec: MockSpec | None = None, timeouts: Timeouts | None = None, seed: int = 0) -> MockBackend:
    cfg = BackendConfig(name="sim", kind="mock", mock=spec or MockSpec(output_tokens=6),
                        timeouts=timeouts or Timeouts())
    return MockBackend(cfg, None, rng=Random(seed))


def req(stream: bool = False, **extra: Any) -> BackendRequest:
    return BackendRequest("chat", {**BODY, **extra, "stream": stream}, stream=stream)


async def collect(backend: MockBackend, request: BackendRequest) -> list[Chunk]:
    return [c async for c in backend.stream(request)]


async def test_built_from_yaml_through_the_registry() -> None:
    cfg = load_text("""
backends:
  sim: {kind: mock, first_token_ms: 0, output_tokens: 4, embedding_dim: 8}
models:
  m: {deployments: [sim]}
""")
    async with aiohttp.ClientSession() as session:
        backend = build_backend(cfg.backends["sim"], session)
        assert isinstance(backend, MockBackend) and backend.name == "sim"
        assert supports_embeddings(backend) and isinstance(backend, SupportsEmbeddings)
        resp = await backend.complete(req())
        assert resp.usage is not None and resp.usage.completion_tokens == 4
        await backend.aclose()


async def test_complete_returns_body_and_usage() -> None:
    backend = make()
    resp = await backend.complete(req())
    assert resp.body["object"] == "chat.completion" and resp.body["model"] == "up-model"
    assert resp.usage is not None
    assert resp.usage.as_dict() == resp.body["usage"] == {
        "prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
    assert backend.calls == 1 and backend.in_flight == 0


async def test_text_completion_endpoint() -> None:
    resp = await make().complete(BackendRequest("completion", {"prompt": "say something"}))
    assert resp.body["object"] == "text_completion" and resp.body["model"] == "sim"


async def test_stream_chunks_carry_bytes_payload_and_trailer_usage() -> None:
    chunks = await collect(make(), req(stream=True))
    assert all(orjson.loads(c.data) == c.payload for c in chunks)
    *body, trailer = chunks
    assert trailer.usage_only and trailer.payload["choices"] == []
    assert trailer.usage is not None and trailer.usage.completion_tokens == 6
    assert not any(c.usage_only or c.usage for c in body)
    text = "".join(c.payload["choices"][0]["delta"].get("content") or "" for c in body)
    assert len(text.split()) == 6


async def test_first_token_and_token_pacing() -> None:
    backend = make(MockSpec(first_token_ms=60, tokens_per_s=200, output_tokens=20))
    loop = asyncio.get_running_loop()
    start = loop.time()
    times = [loop.time() - start async for _ in backend.stream(req(stream=True))]
    assert 0.055 <= times[0] < 0.5
    assert 0.06 + 19 / 200 - 0.01 <= times[-1] < 1.0  # 20 tokens at 200/s after the first token
    start = loop.time()
    await backend.complete(req())
    assert 0.06 + 20 / 200 - 0.01 <= loop.time() - start < 1.0


async def test_high_token_rates_batch_their_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def counting_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", counting_sleep)
    backend = make(MockSpec(tokens_per_s=50_000, output_tokens=2000))
    started = time.perf_counter()
    chunks = await collect(backend, req(stream=True))
    elapsed = time.perf_counter() - started
    assert len(chunks) > 2000
    # Paced: 2000 tokens at 50k/s take 40 ms, less at most the last unslept batch (< 4 ms).
    # In >= 4 ms batches, so at most 10 sleeps (20 with slack); none at all is right on a
    # machine too busy to produce them faster than the rate.
    assert elapsed >= 0.036
    assert len(sleeps) <= 20


async def test_invalid_request_is_http_400() -> None:
    with pytest.raises(BackendHTTPError) as info:
        await make().complete(BackendRequest("chat", {"messages": []}))
    assert info.value.status == 400 and info.value.param == "messages"


@pytest.mark.parametrize(("mode", "status"), [("http_500", 500), ("http_429", 429), ("context_length", 400)])
async def test_http_failure_modes(mode: str, status: int) -> None:
    backend = make(MockSpec(fail_mode=mode, fail_rate=1.0))
    for call in (backend.complete(req()), collect(backend, req(stream=True))):
        with pytest.raises(BackendHTTPError) as info:
            await call
        assert info.value.status == status and info.value.backend == "sim"
    if mode == "http_429":
        assert info.value.retry_after == 1
    if mode == "context_length":
        assert info.value.code == "context_length_exceeded" and info.value.is_context_length


async def test_prompt_longer_than_context_window() -> None:
    backend = make(MockSpec(context_window=5))
    with pytest.raises(BackendHTTPError) as info:
        await backend.complete(req(messages=[{"role": "user", "content": "w " * 10}]))
    assert info.value.is_context_length


async def test_reset_fails_before_any_chunk() -> None:
    backend = make(MockSpec(fail_mode="reset"))
    with pytest.raises(BackendUnavailable):
        await backend.complete(req())
    received: list[Chunk] = []
    with pytest.raises(BackendUnavailable):
        async for chunk in backend.stream(req(stream=True)):
            received.append(chunk)
    assert received == []


@pytest.mark.parametrize(("mode", "error"), [
    ("stream_cut", BackendUnavailable), ("malformed_chunk", BackendProtocolError)])
async def test_mid_stream_failures_after_some_chunks(mode: str, error: type[Exception]) -> None:
    backend = make(MockSpec(fail_mode=mode, output_tokens=8))
    received: list[Chunk] = []
    with pytest.raises(error):
        async for chunk in backend.stream(req(stream=True)):
            received.append(chunk)
    assert 1 <= len(received) < 11
    assert not any(c.usage_only for c in received)
    with pytest.raises(error):
        await backend.complete(req())
    assert backend.in_flight == 0


async def test_timeout_mode_hangs_until_the_first_token_timeout() -> None:
    backend = make(MockSpec(fail_mode="timeout"), Timeouts(first_token=0.05))
    with pytest.raises(BackendTimeout) as info:
        await backend.complete(req())
    assert info.value.phase == "first_token" and isinstance(info.value, TimeoutError)
    with pytest.raises(BackendTimeout):
        await collect(backend, req(stream=True))


async def test_timeout_mode_hangs_until_cancelled() -> None:
    backend = make(MockSpec(fail_mode="timeout"))
    task = asyncio.ensure_future(backend.complete(req()))
    await asyncio.sleep(0.05)
    assert not task.done() and backend.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.cancelled == 1 and backend.in_flight == 0


async def test_request_deadline_applies() -> None:
    backend = make(MockSpec(first_token_ms=5000))
    request = req()
    request.deadline = asyncio.get_running_loop().time() + 0.05
    with pytest.raises(BackendTimeout) as info:
        await backend.complete(request)
    assert info.value.phase == "deadline"


async def test_idle_timeout_between_chunks() -> None:
    backend = make(MockSpec(tokens_per_s=2, output_tokens=4), Timeouts(idle=0.05))
    with pytest.raises(BackendTimeout) as info:
        await collect(backend, req(stream=True))
    assert info.value.phase == "idle"


async def test_closing_a_stream_early_counts_as_cancelled() -> None:
    backend = make(MockSpec(tokens_per_s=100, output_tokens=50))
    stream = backend.stream(req(stream=True))
    await stream.__anext__()
    assert backend.in_flight == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert backend.in_flight == 0 and backend.cancelled == 1


async def test_fail_rate_is_drawn_per_request() -> None:
    backend = make(MockSpec(fail_mode="http_500", fail_rate=0.5), seed=7)
    outcomes = []
    for _ in range(200):
        try:
            await backend.complete(req())
            outcomes.append(True)
        except BackendHTTPError:
            outcomes.append(False)
    assert 60 < outcomes.count(False) < 140


async def test_embed() -> None:
    backend = make(MockSpec(embedding_dim=12))
    resp = await backend.embed(EmbeddingRequest({"model": "e", "input": ["a", "b"]}))
    assert [len(d["embedding"]) for d in resp.body["data"]] == [12, 12]
    assert resp.usage is not None and resp.usage.prompt_tokens == 2 and resp.usage.completion_tokens == 0
    failing = make(MockSpec(fail_mode="http_429"))
    with pytest.raises(BackendHTTPError):
        await failing.embed(EmbeddingRequest({"input": "a"}))
    with pytest.raises(BackendHTTPError):
        await backend.embed(EmbeddingRequest({"input": 5}))


async def test_health_reports_load_and_permanent_failure() -> None:
    backend = make(MockSpec(first_token_ms=200))
    health = await backend.health()
    assert health.ok and health.running == 0 and health.waiting == 0
    task = asyncio.ensure_future(backend.complete(req()))
    await asyncio.sleep(0.01)
    assert (await backend.health()).running == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    backend.gauges = LoadGauges(waiting=3, running=7, kv_cache_usage=0.5)
    health = await backend.health()
    assert (health.waiting, health.running, health.kv_cache_usage) == (3, 7, 0.5)
    backend.set_spec(MockSpec(fail_mode="reset"))
    assert not (await backend.health()).ok
    backend.set_spec(MockSpec(fail_mode="reset", fail_rate=0.5))
    assert (await backend.health()).ok


