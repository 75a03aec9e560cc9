"""A small pooled HTTP/1.1 client for plain-http upstreams (vLLM, SGLang, llama.cpp on a private
network), built on ``asyncio.Protocol`` and llhttp (``httptools``). It exists because the aiohttp
ClientSession request path cost about a third of the gateway's CPU per request; HTTPS upstreams
keep using aiohttp (TLS, proxies).

Contracts:
- ``H1Pool`` keeps keep-alive connections to one (host, port), at most ``limit`` open or
  connecting; further requests queue in FIFO order until one is released. Idle connections are
  reused newest first and dropped after ``idle_ttl`` or as soon as the server closes them.
- ``H1Client`` pre-encodes the request head per (method, path) (Host, static headers such as
  Content-Type and Authorization) and sends head, per-request headers and body in one write.
- A request on a reused connection that is closed before any response byte (the server timed it
  out while idle) is retried once on another connection; nothing else is retried.
- Errors are ``backends.errors``: refused → BackendUnavailable, reset mid-response →
  BackendUnavailable, malformed HTTP → BackendProtocolError, status >= 400 → the upstream's error
  (``http_error_from_body``), expired limits → BackendTimeout naming the phase (``connect`` for
  the TCP handshake, else what the request's ``Watchdog`` says).
- A connection returns to the pool only after a complete response. ``H1Response.close(done)``
  with ``done`` false (stream abandoned, failed or cancelled) closes it, which tells the upstream
  to stop generating; with ``done`` true and the body's end still in flight, the connection is
  released when that end arrives (or closed after ``_DRAIN_S``).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

from backends._h1conn import H1Connection, StaleConnection, Watchdog
from backends._http import http_error_from_body
from backends.errors import BackendTimeout, BackendUnavailable

_DRAIN_S = 5.0
_SKIPPED = frozenset({"host", "content-length", "connection", "transfer-encoding"})


class H1Pool:
    def __init__(self, backend: str, host: str, port: int, limit: int, connect_timeout: float,
                 idle_ttl: float = 60.0) -> None:
        self.backend, self.host, self.port = backend, host, port
        self.limit, self.connect_timeout, self.idle_ttl = limit, connect_timeout, idle_ttl
        self._idle: list[H1Connection] = []
        self._live: set[H1Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._factory = functools.partial(H1Connection, backend, self._lost)

    @property
    def size(self) -> int:
        return len(self._live) + self._connecting

    async def acquire(self, wd: Watchdog) -> tuple[H1Connection, bool]:
        """A connection and whether it was reused."""
        while True:
            conn = self._pop_idle()
            if conn is not None:
                return conn, True
            if self.size < self.limit:
                return await self._connect(wd), False
            await self._wait_slot(wd)

    def release(self, conn: H1Connection) -> None:
        if conn.reusable and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
            self._wake_one()
        else:
            self.drop(conn)

    def finish(self, conn: H1Connection, done: bool) -> None:
        """End of a streamed response (see the module contract)."""
        if not done or conn.closed or conn.exc is not None:
            self.drop(conn)
        elif conn.done:
            self.release(conn)
        else:
            conn.on_done = self._drained
            conn.drain_timer = asyncio.get_running_loop().call_later(_DRAIN_S, conn.abort)

    def drop(self, conn: H1Connection) -> None:
        conn.abort()
        if conn in self._live:
            self._live.discard(conn)
            self._wake_one()

    async def aclose(self) -> None:
        """Close idle connections; busy ones are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self.drop(conn)

    def _drained(self, conn: H1Connection) -> None:
        conn.on_done = None
        if conn.drain_timer is not None:
            conn.drain_timer.cancel()
            conn.drain_timer = None
        self.release(conn)

    def _lost(self, conn: H1Connection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
        self.drop(conn)

    def _pop_idle(self) -> H1Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and asyncio.get_running_loop().time() - conn.idle_since < self.idle_ttl:
                return conn
            self.drop(conn)
        return None

    async def _connect(self, wd: Watchdog) -> H1Connection:
        left, expired = wd.remaining()
        limit, error = left, expired
        if self.connect_timeout < left:
            limit, error = self.connect_timeout, BackendTimeout(self.backend, "connect", self.connect_timeout)
        if limit <= 0:
            raise error
        loop = asyncio.get_running_loop()
        cm = asyncio.timeout(limit)
        self._connecting += 1
        try:
            async with cm:
                _, conn = await loop.create_connection(self._factory, self.host, self.port)
        except OSError as exc:
            if cm.expired():
                raise error from None
            raise BackendUnavailable(self.backend, f"cannot connect to backend {self.backend}: {exc}") from exc
        finally:
            self._connecting -= 1
            self._wake_one()  # a failed connect frees its slot; a good one is accounted in _live
        self._live.add(conn)
        return conn

    async def _wait_slot(self, wd: Watchdog) -> None:
        left, expired = wd.remaining()
        if left <= 0:
            raise expired
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        cm = asyncio.timeout(left)
        try:
            async with cm:
                await fut
        except TimeoutError:
            raise expired from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._wake_one()  # pass on the slot this waiter was given
            raise
        finally:
            if not fut.done():
                fut.cancel()

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


class H1Response:
    """A streamed response whose head was read with a status below 400."""

    __slots__ = ("_pool", "_wd", "conn")

    def __init__(self, pool: H1Pool, conn: H1Connection, wd: Watchdog) -> None:
        self._pool, self.conn, self._wd = pool, conn, wd

    async def read(self) -> bytes:
        """Body bytes as they arrive; b"" at the end. The phase limit bounds each read's wait,
        not the consumer's time between reads (the ``total``/``deadline`` bound runs throughout)."""
        wd = self._wd
        wd.touch()
        data = await self.conn.read_some()
        wd.pause()
        return data

    def close(self, done: bool) -> None:
        self._wd.disarm()
        self._pool.finish(self.conn, done)


class H1Client:
    def __init__(self, backend: str, url: str, headers: Mapping[str, str], limit: int,
                 connect_timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"H1Client needs an http:// URL, got {url!r}")
        self.backend = backend
        self.pool = H1Pool(backend, parts.hostname, parts.port or 80, limit, connect_timeout)
        self._prefix = parts.path.rstrip("/")
        self._host = parts.netloc.rpartition("@")[2]
        self._static = [(k, v) for k, v in headers.items() if k.lower() not in _SKIPPED]
        self._static_names = frozenset(k.lower() for k, _ in self._static)
        self._heads: dict[tuple[str, str], bytes] = {}

    def encode(self, method: str, path: str, body: bytes | None, extra: Mapping[str, str]) -> bytes:
        """The whole request: cached head, per-request headers, framing and body."""
        head = self._heads.get((method, path))
        if head is None:
            head = self._heads[method, path] = self._encode_head(method, path, self._static)
        parts = [head]
        if extra:
            if not self._static_names.isdisjoint(k.lower() for k in extra):
                merged = {**dict(self._static), **extra}  # an override: rebuild this head
                parts = [self._encode_head(method, path, list(merged.items()))]
            else:
                parts.extend(_line(k, v) for k, v in extra.items())
        if body is not None:
            parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
            parts.append(body)
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    def _encode_head(self, method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"{method} {self._prefix}{path} HTTP/1.1\r\nHost: {self._host}\r\n".encode()]
        lines.extend(_line(k, v) for k, v in headers if k.lower() not in _SKIPPED)
        return b"".join(lines)

    async def fetch(self, method: str, path: str, body: bytes | None, extra: Mapping[str, str],
                    wd: Watchdog) -> tuple[int, bytes]:
        """A whole response as (status, body); status >= 400 raises the upstream's error."""
        conn = await self._send(self.encode(method, path, body, extra), wd, stream=False)
        try:
            status, raw = conn.status, conn.take_body()
        finally:
            wd.disarm()
            self.pool.release(conn)
        if status >= 400:
            raise http_error_from_body(self.backend, status, raw, conn.header(b"retry-after"))
        return status, raw

    async def open(self, path: str, body: bytes, extra: Mapping[str, str], wd: Watchdog) -> H1Response:
        """POST and return the streamed response once its head arrived with a status below 400."""
        conn = await self._send(self.encode("POST", path, body, extra), wd, stream=True)
        if conn.status < 400:
            return H1Response(self.pool, conn, wd)
        try:
            conn.unbound()  # an error body is read whole
            await conn.wait_for(complete=True)
            raw = conn.take_body()
        finally:
            wd.disarm()
            self.pool.release(conn)
        raise http_error_from_body(self.backend, conn.status, raw, conn.header(b"retry-after"))

    async def _send(self, data: bytes, wd: Watchdog, stream: bool) -> H1Connection:
        for attempt in (0, 1):
            conn, reused = await self.pool.acquire(wd)
            try:
                if not conn.begin(data, stream):
                    raise StaleConnection(self.backend, f"backend {self.backend} closed the connection")
                wd.arm(conn.fail)
                await conn.wait_for(complete=not stream)
            except StaleConnection:
                wd.disarm()
                self.pool.drop(conn)
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                wd.disarm()
                self.pool.drop(conn)
                raise
            return conn
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.pool.aclose()


def _line(name: str, value: str) -> bytes:
    """One header line; a name or value with a line break (header injection) is left out."""
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
        return b""
    return f"{name}: {value}\r\n".encode()
