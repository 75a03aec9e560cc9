"""Streaming semantics: cut streams end with an error event and no [DONE]; failures before the
first byte are ordinary error responses; a client that disconnects cancels the upstream."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from backends.mock_server import MockServerHandle
from tests.conftest import GatewayFactory, free_port, openai_yaml

CHAT = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "tell me a story"}]}


async def _set_mock(handle: MockServerHandle, **changes: object) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{handle.url}/mock/config", json=changes) as r:
        assert r.status == 200


async def _events(base: str, body: dict[str, object]) -> tuple[int, list[bytes]]:
    async with aiohttp.ClientSession() as s, s.post(f"{base}/v1/chat/completions", json=body) as r:
        raw = await r.read()
        return r.status, [e[6:] for e in raw.split(b"\n\n") if e.startswith(b"data: ")]


async def test_cut_after_first_bytes_ends_with_error_event(
    gateway: GatewayFactory, mock_upstream: MockServerHandle,
) -> None:
    base = await gateway(openai_yaml(mock_upstream.url))
    for mode in ("stream_cut", "malformed_chunk"):
        await _set_mock(mock_upstream, fail_mode=mode, output_tokens=40)
        status, events = await _events(base, CHAT)
        assert status == 200
        assert events[-1] != b"[DONE]" and b"[DONE]" not in events
        error = orjson.loads(events[-1])["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert len(events) > 2  # real content was delivered before the cut


async def test_failure_before_first_byte_is_a_normal_error(
    gateway: GatewayFactory, mock_upstream: MockServerHandle,
) -> None:
    base = await gateway(openai_yaml(mock_upstream.url))
    await _set_mock(mock_upstream, fail_mode="http_500")
    async with aiohttp.ClientSession() as s, s.post(f"{base}/v1/chat/completions", json=CHAT) as r:
        assert r.status == 502
        assert r.content_type == "application/json"
        assert (await r.json())["error"]["code"] == "upstream_error"


async def test_client_disconnect_cancels_upstream(gateway: GatewayFactory) -> None:
    """A slow upstream stream; the client reads one event and goes away. The upstream must see
    its connection closed long before it would have finished."""
    upstream_closed = asyncio.Event()

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(200):
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                         "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                await asyncio.sleep(0.05)
        except (asyncio.CancelledError, ConnectionResetError):
            upstream_closed.set()
            raise
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow_stream)
    upstream = TestServer(app, host="127.0.0.1", port=free_port())
    await upstream.start_server()
    try:
        base = await gateway(openai_yaml(f"http://127.0.0.1:{upstream.port}"))
        async with aiohttp.ClientSession() as s:
            resp = await s.post(f"{base}/v1/chat/completions", json=CHAT)
            assert resp.status == 200
            await resp.content.readline()
            resp.close()  # the client goes away mid-stream
        await asyncio.wait_for(upstream_closed.wait(), timeout=3)
    finally:
        await upstream.close()


async def test_streamed_answer_is_counted_when_upstream_gives_no_usage(gateway: GatewayFactory) -> None:
    """An upstream that ignores include_usage: the gateway counts with tiktoken and still sends
    the usage trailer the client asked for."""
    async def no_usage(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for text, finish in (("Hello", None), (" world", None), ("", "stop")):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", no_usage)
    upstream = TestServer(app, host="127.0.0.1", port=free_port())
    await upstream.start_server()
    try:
        base = await gateway(openai_yaml(f"http://127.0.0.1:{upstream.port}"))
        status, events = await _events(base, {**CHAT, "stream_options": {"include_usage": True}})
        assert status == 200 and events[-1] == b"[DONE]"
        usage = orjson.loads(events[-2])["usage"]
        assert usage["completion_tokens"] == 2  # "Hello" + " world" in cl100k_base
        assert usage["prompt_tokens"] > 0
    finally:
        await upstream.close()


class _GoneClient:
    """A prepared response whose client went away after the first event."""

    def __init__(self) -> None:
        self.writes = 0

    async def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes > 1:
            raise ConnectionResetError("client went away")


async def test_replay_to_a_departed_client_releases_the_ticket() -> None:
    """A cached answer replayed to a client that leaves mid-stream must still finish its ticket
    (a leaked ticket would hold a concurrency lease and a budget reservation forever)."""
    from gateway.interfaces import CachedAnswer, Outcome
    from gateway.pipeline import OpenStream, Pipeline, RequestContext
    from gateway.streaming import _write_cached
    from gateway.tasks import TaskTracker
    from gateway.tokens import TokenCounter

    finished: list[str] = []

    class Ticket:
        def settle(self, outcome: Outcome) -> None:
            finished.append("settled")

        def release(self, status: int) -> None:
            finished.append(f"released {status}")

    tasks = TaskTracker()
    pipeline = Pipeline(None, tasks, TokenCounter())  # type: ignore[arg-type]
    answer = {"id": "c", "model": "m", "choices": [{"index": 0, "message": {"content": "hi"},
                                                      "finish_reason": "stop"}]}
    opened = OpenStream(None, None, None, Ticket(), None, CachedAnswer(answer, "exact", "k"))  # type: ignore[arg-type]
    ctx = RequestContext("r1", None, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ConnectionResetError):
        await _write_cached(_GoneClient(), pipeline, ctx, opened, include_usage=False)  # type: ignore[arg-type]
    await tasks.drain(1.0)
    assert finished == ["released 499"]
