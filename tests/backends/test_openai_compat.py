"""OpenAIBackend against a scripted upstream on loopback: pass-through bytes, usage trailer,
timeouts by phase, error mapping, client deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from backends.base import BackendRequest, EmbeddingRequest
from backends.errors import BackendHTTPError, BackendProtocolError, BackendTimeout, BackendUnavailable
from backends.openai_compat import OpenAIBackend, api_base
from configs.schema import BackendConfig, Timeouts
from tests.conftest import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHUNK = orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                      "choices": [{"index": 0, "delta": {"content": "hé"}, "finish_reason": None}]})
USAGE = orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                      "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
REQ = BackendRequest("chat", {"model": "m", "messages": [{"role": "user", "content": "x"}]})


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1", port=free_port())
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def backend(url: str, session: aiohttp.ClientSession, **timeouts: float) -> OpenAIBackend:
    return OpenAIBackend(BackendConfig("up", "openai", url=url, api_key="k", timeouts=Timeouts(**timeouts)), session)


def test_api_base() -> None:
    assert api_base("http://h:1") == "http://h:1/v1"
    assert api_base("http://h:1/v1") == "http://h:1/v1"


async def test_stream_passes_bytes_through_and_marks_usage(upstream, session) -> None:  # type: ignore[no-untyped-def]
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.update(await request.json())
        seen["auth"] = request.headers.get("Authorization")
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b": keep-alive comment\n\ndata: " + CHUNK + b"\n\ndata: " + USAGE + b"\n\ndata: [DONE]\n\n")
        return resp

    up = backend(await upstream(handler), session)
    chunks = [c async for c in up.stream(REQ)]
    assert [c.data for c in chunks] == [CHUNK, USAGE]
    assert chunks[1].usage_only and chunks[1].usage is not None and chunks[1].usage.total_tokens == 4
    assert seen["stream"] is True and seen["stream_options"] == {"include_usage": True}
    assert seen["auth"] == "Bearer k"


async def test_complete_and_embed(upstream, session) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        usage = {"prompt_tokens": 2, "completion_tokens": 5}
        if request.path.endswith("/embeddings"):
            return web.json_response({"object": "list", "data": [], "usage": usage})
        return web.json_response({"object": "chat.completion", "choices": [], "usage": usage})

    up = backend(await upstream(handler), session)
    resp = await up.complete(REQ)
    assert resp.usage is not None and resp.usage.completion_tokens == 5
    emb = await up.embed(EmbeddingRequest({"model": "m", "input": "x"}))
    assert emb.body["object"] == "list"


async def test_upstream_error_body_is_kept(upstream, session) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        error = {"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}
        return web.json_response(error, status=400, headers={"Retry-After": "3"})

    up = backend(await upstream(handler), session)
    with pytest.raises(BackendHTTPError) as err:
        await up.complete(REQ)
    assert (err.value.status, err.value.message, err.value.code) == (400, "too long", "context_length_exceeded")
    assert err.value.is_context_length and err.value.retry_after == 3


async def test_first_token_idle_and_deadline_timeouts(upstream, session) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if request.headers.get("x-slow-start"):
            await asyncio.sleep(1)
        await resp.prepare(request)
        await resp.write(b"data: " + CHUNK + b"\n\n")
        await asyncio.sleep(1)
        return resp

    url = await upstream(handler)
    up = backend(url, session, first_token=0.2, idle=0.2, total=5)
    chunks = up.stream(REQ)
    assert (await anext(chunks)).data == CHUNK
    with pytest.raises(BackendTimeout) as err:
        await anext(chunks)
    assert err.value.phase == "idle"
    slow = BackendRequest("chat", {"model": "m"}, headers={"x-slow-start": "1"})
    with pytest.raises(BackendTimeout) as err:
        await anext(up.stream(slow))
    assert err.value.phase == "first_token"
    loop = asyncio.get_running_loop()
    tight = BackendRequest("chat", {"model": "m"}, deadline=loop.time() + 0.1)
    with pytest.raises(BackendTimeout) as err:
        [c async for c in backend(url, session, idle=5, total=5).stream(tight)]
    assert err.value.phase == "deadline"


async def test_total_timeout_non_streaming(upstream, session) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    with pytest.raises(BackendTimeout) as err:
        await backend(await upstream(handler), session, total=0.2).complete(REQ)
    assert err.value.phase == "total"
    assert isinstance(err.value, TimeoutError)


async def test_malformed_chunks_and_error_events(upstream, session) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        err = request.headers.get("x-err")
        tail = b'data: {"error": {"message": "engine died"}}\n\n' if err else b"data: {oops\n\n"
        await resp.write(b"data: " + CHUNK + b"\n\n" + tail)
        return resp

    up = backend(await upstream(handler), session)
    with pytest.raises(BackendProtocolError):
        [c async for c in up.stream(REQ)]
    with pytest.raises(BackendHTTPError, match="engine died"):
        [c async for c in up.stream(BackendRequest("chat", {"model": "m"}, headers={"x-err": "1"}))]


async def test_stream_without_done_is_a_protocol_error(upstream, session) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: " + CHUNK + b"\n\n")
        return resp

    with pytest.raises(BackendProtocolError, match="without"):
        [c async for c in backend(await upstream(handler), session).stream(REQ)]


async def test_connection_refused_is_unavailable(session) -> None:  # type: ignore[no-untyped-def]
    up = backend(f"http://127.0.0.1:{free_port()}", session)
    with pytest.raises(BackendUnavailable):
        await up.complete(REQ)
    health = await up.health()
    assert not health.ok
