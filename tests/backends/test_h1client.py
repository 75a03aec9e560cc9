"""The pooled HTTP/1.1 client against real aiohttp servers and raw asyncio servers on loopback:
framing, keep-alive and the pool bound, stale connections, abandoned streams, timeouts by
phase and error mapping."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from backends._h1client import H1Client, H1Response
from backends._h1conn import Watchdog
from backends.errors import BackendHTTPError, BackendProtocolError, BackendTimeout, BackendUnavailable
from tests.backends.fakes.net import blackhole_url, closed_port_url
from tests.conftest import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Raw:
    """A raw asyncio server: every connection runs ``handler``; counts connections."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def response(body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    head = [b"HTTP/" + version + b" 200 OK", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@pytest.fixture
async def aio() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1", port=free_port())
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}/v1"

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[RawHandler], Awaitable[Raw]]]:
    servers: list[Raw] = []

    async def start(handler: RawHandler) -> Raw:
        server = Raw(handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., H1Client]]:
    made: list[H1Client] = []

    def make(url: str, limit: int = 8, connect: float = 2.0, **headers: str) -> H1Client:
        client = H1Client("up", url, {"Content-Type": "application/json", **headers}, limit, connect)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def wd(total: float = 5.0, phase: str | None = None, limit: float | None = None,
       deadline: float | None = None) -> Watchdog:
    if phase is None:
        return Watchdog("up", total, deadline)
    assert phase in ("first_token", "idle")
    return Watchdog("up", total, deadline, "first_token", limit)


def url_of(server: Raw) -> str:
    assert server.server is not None
    return f"http://127.0.0.1:{server.server.sockets[0].getsockname()[1]}/v1"


async def drain(resp: H1Response) -> bytes:
    parts = []
    while data := await resp.read():
        parts.append(data)
    resp.close(True)
    return b"".join(parts)


async def test_content_length_and_chunked_bodies_and_headers(aio, clients) -> None:  # type: ignore[no-untyped-def]
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        seen.append({**headers, "path": request.path, "body": (await request.read()).decode()})
        if request.path.endswith("/chunked"):
            resp = web.StreamResponse()
            await resp.prepare(request)
            for part in (b"ab", b"cd", b"ef"):
                await resp.write(part)
            return resp
        return web.Response(body=b"plain body")

    client = clients(await aio(handler), Authorization="Bearer k", **{"X-Static": "s"})
    assert await client.fetch("POST", "/a", b'{"x":1}', {"x-request-id": "r1"}, wd()) == (200, b"plain body")
    assert await client.fetch("POST", "/chunked", b"{}", {}, wd()) == (200, b"abcdef")
    resp = await client.open("/chunked", b"{}", {"X-Static": "override"}, wd())
    assert await drain(resp) == b"abcdef"
    first = seen[0]
    assert (first["path"], first["body"], first["authorization"], first["x-request-id"]) == ("/v1/a", '{"x":1}',
                                                                                            "Bearer k", "r1")
    assert first["host"].startswith("127.0.0.1:") and first["content-type"] == "application/json"
    assert seen[2]["x-static"] == "override"
    assert client.pool.size == 1  # all three on one keep-alive connection


async def test_keep_alive_reuses_one_connection(raw, clients) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            writer.write(response(body))

    server = await raw(handler)
    client = clients(url_of(server))
    for i in range(50):
        assert (await client.fetch("POST", "/x", b"%d" % i, {}, wd()))[1] == b"%d" % i
    assert server.connections == 1


async def test_pool_bound_queues_waiters(aio, clients) -> None:  # type: ignore[no-untyped-def]
    active, peak = 0, 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return web.Response(body=await request.read())

    client = clients(await aio(handler), limit=2)
    results = await asyncio.gather(*(client.fetch("POST", "/x", b"%d" % i, {}, wd()) for i in range(8)))
    assert [body for _, body in results] == [b"%d" % i for i in range(8)]
    assert peak == 2 and client.pool.size == 2
    # A waiter whose time runs out in the queue gets its own phase's timeout.
    slow = [asyncio.ensure_future(client.fetch("POST", "/x", b"", {}, wd())) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(BackendTimeout) as err:
        await client.fetch("POST", "/x", b"", {}, wd(total=0.02))
    assert err.value.phase == "total"
    await asyncio.gather(*slow)


async def test_server_closing_idle_connection_then_new_request_succeeds(raw, clients) -> None:  # type: ignore[no-untyped-def]
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        writer.write(response(body))  # keep-alive advertised, then closed while idle
        await writer.drain()

    server = await raw(one_per_connection)
    client = clients(url_of(server))
    assert (await client.fetch("POST", "/x", b"1", {}, wd()))[1] == b"1"
    await asyncio.sleep(0.05)
    assert (await client.fetch("POST", "/x", b"2", {}, wd()))[1] == b"2"
    assert server.connections == 2


async def test_close_on_receipt_is_retried_once_on_reused_connections_only(raw, clients) -> None:  # type: ignore[no-untyped-def]
    requests = 0

    async def second_dropped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        _, body = await read_request(reader)
        requests += 1
        writer.write(response(body))
        await read_request(reader)  # the keep-alive race: read, then close without a byte
        requests += 1

    server = await raw(second_dropped)
    client = clients(url_of(server))
    assert (await client.fetch("POST", "/x", b"1", {}, wd()))[1] == b"1"
    assert (await client.fetch("POST", "/x", b"2", {}, wd()))[1] == b"2"  # retried transparently
    assert (server.connections, requests) == (2, 3)

    async def drop_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    dropper = await raw(drop_all)
    with pytest.raises(BackendUnavailable, match="closed the connection"):
        await clients(url_of(dropper)).fetch("POST", "/x", b"1", {}, wd())
    assert dropper.connections == 1  # a fresh connection is never retried


async def test_connection_close_and_http10_bodies(raw, clients) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        if b"/old" in head:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-" + body)
            await writer.drain()
            writer.close()
            return
        writer.write(response(body, b"Connection: close"))

    server = await raw(handler)
    client = clients(url_of(server))
    assert (await client.fetch("POST", "/x", b"a", {}, wd()))[1] == b"a"
    assert (await client.fetch("POST", "/x", b"b", {}, wd()))[1] == b"b"
    assert (await client.fetch("POST", "/old", b"close", {}, wd()))[1] == b"until-close"
    assert server.connections == 3 and client.pool.size == 0


async def test_reset_mid_body_is_unavailable(raw, clients) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST

    client = clients(url_of(await raw(handler)))
    with pytest.raises(BackendUnavailable, match="closed the connection"):
        await client.fetch("POST", "/x", b"", {}, wd())
    resp = await client.open("/x", b"", {}, wd())
    with pytest.raises(BackendUnavailable):
        await drain(resp)
    resp.close(False)
    assert client.pool.size == 0


async def test_abandoned_stream_closes_the_connection(aio, clients) -> None:  # type: ignore[no-untyped-def]
    gone = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"data: tick\n\n")
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            gone.set()
            raise

    client = clients(await aio(handler))
    resp = await client.open("/x", b"", {}, wd())
    assert (await resp.read()).startswith(b"data: tick")
    resp.close(False)
    await asyncio.wait_for(gone.wait(), 2)
    assert client.pool.size == 0

    gone.clear()  # a cancelled non-streaming call drops its connection too
    task = asyncio.ensure_future(client.fetch("POST", "/x", b"", {}, wd()))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.wait_for(gone.wait(), 2)
    assert client.pool.size == 0


async def test_timeouts_by_phase(aio, clients) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/slow-head"):
            await asyncio.sleep(1)
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: 1\n\n")
        await asyncio.sleep(1)
        return resp

    client = clients(await aio(handler))
    with pytest.raises(BackendTimeout) as err:
        await client.open("/slow-head", b"", {}, wd(phase="first_token", limit=0.1))
    assert err.value.phase == "first_token"
    stream_wd = wd(phase="first_token", limit=0.5)
    resp = await client.open("/x", b"", {}, stream_wd)
    assert await resp.read() == b"data: 1\n\n"
    stream_wd.set_phase("idle", 0.1)
    with pytest.raises(BackendTimeout) as err:
        await resp.read()
    assert err.value.phase == "idle"
    resp.close(False)
    with pytest.raises(BackendTimeout) as err:
        await client.fetch("POST", "/x", b"", {}, wd(total=0.1))
    assert err.value.phase == "total"
    loop = asyncio.get_running_loop()
    with pytest.raises(BackendTimeout) as err:
        await client.fetch("POST", "/x", b"", {}, wd(deadline=loop.time() + 0.1))
    assert err.value.phase == "deadline"
    with blackhole_url() as url, pytest.raises(BackendTimeout) as err:
        await clients(url, connect=0.1).fetch("POST", "/x", b"", {}, wd())
    assert err.value.phase == "connect"


async def test_idle_limit_bounds_reads_not_the_consumer(aio, clients) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(b"data: %d\n\n" % i)
            await asyncio.sleep(0.03)
        return resp

    client = clients(await aio(handler))
    stream_wd = wd(phase="first_token", limit=1)
    resp = await client.open("/x", b"", {}, stream_wd)
    stream_wd.set_phase("idle", 0.1)
    first = await resp.read()
    await asyncio.sleep(0.3)  # a slow consumer (client backpressure) is not an idle upstream
    assert first + await drain(resp) == b"".join(b"data: %d\n\n" % i for i in range(5))
    assert client.pool.size == 1


async def test_large_bodies_both_ways(aio, clients) -> None:  # type: ignore[no-untyped-def]
    big = bytes(range(256)) * 20_000  # ~5 MB

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.endswith("/chunked"):
            resp = web.StreamResponse()
            await resp.prepare(request)
            for i in range(0, len(big), 65536):
                await resp.write(big[i:i + 65536])
            return resp
        return web.Response(body=body + big)

    client = clients(await aio(handler))
    assert (await client.fetch("POST", "/x", big, {}, wd()))[1] == big + big
    resp = await client.open("/chunked", b"", {}, wd())
    await asyncio.sleep(0.2)  # the reader lags: the transport is paused, nothing is lost
    assert resp.conn.paused
    assert await drain(resp) == big
    assert client.pool.size == 1


async def test_malformed_and_pipelined_garbage(raw, clients) -> None:  # type: ignore[no-untyped-def]
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 banana\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    client = clients(url_of(await raw(garbage)))
    with pytest.raises(BackendProtocolError, match="malformed HTTP"):
        await client.fetch("POST", "/x", b"", {}, wd())

    async def trailing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            writer.write(response(body) + b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nX")

    server = await raw(trailing)
    client = clients(url_of(server))
    assert (await client.fetch("POST", "/x", b"a", {}, wd()))[1] == b"a"
    assert (await client.fetch("POST", "/x", b"b", {}, wd()))[1] == b"b"
    assert server.connections == 2  # the connection with extra bytes was not reused


async def test_error_status_and_refused(aio, clients) -> None:  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "busy", "type": "overloaded"}}, status=503,
                                 headers={"Retry-After": "2"})

    client = clients(await aio(handler))
    for call in (client.fetch("POST", "/x", b"", {}, wd()), client.open("/x", b"", {}, wd())):
        with pytest.raises(BackendHTTPError) as err:
            await call
        assert (err.value.status, err.value.message, err.value.retry_after) == (503, "busy", 2)
    assert client.pool.size == 1
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        await clients(closed_port_url()).fetch("GET", "/models", None, {}, wd())
    with pytest.raises(ValueError, match="http://"):
        clients("https://example.com")
