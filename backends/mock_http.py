"""A minimal, fast HTTP/1.1 server protocol for the mock server (mock_server.py).

Why not aiohttp.web: the mock must serve >20k small requests/s on one core so that load tests
measure the gateway, not the simulator. This protocol does only what OpenAI clients need:
- requests with ``Content-Length`` bodies (no chunked request bodies: 411), keep-alive by
  default on HTTP/1.1, ``Connection: close`` honoured, ``Expect: 100-continue`` answered;
- pipelining-safe: requests are answered strictly in order; while an asynchronous answer is in
  progress, later requests stay buffered;
- a handler returns either the complete response bytes (answered synchronously) or an async
  callable that receives a ``Conn`` and writes/streams/aborts itself;
- a client disconnect cancels the running async answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import orjson

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    method: bytes
    path: bytes
    body: bytes
    keep_alive: bool


class Conn:
    """The writing side of one connection, for async answers."""

    def __init__(self, proto: HttpProtocol) -> None:
        self._proto = proto

    @property
    def closed(self) -> bool:
        return self._proto.closed

    def write(self, data: bytes) -> None:
        if not self._proto.closed:
            self._proto.write(data)

    async def drain(self) -> None:
        await self._proto.drain()

    def abort(self) -> None:
        """Drop the connection abruptly (RST where the OS allows)."""
        self._proto.abort()


AsyncAnswer = Callable[[Conn], Awaitable[None]]
Answer = bytes | AsyncAnswer
Handler = Callable[[Request], Answer]


def response(status: int, body: bytes, content_type: bytes = b"application/json",
             extra: bytes = b"", close: bool = False) -> bytes:
    """A complete response; ``extra`` is raw header lines, each ending in CRLF."""
    reason = _REASONS.get(status, b"Unknown")
    conn = b"Connection: close\r\n" if close else b""
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n"
            % (status, reason, content_type, len(body), extra, conn)) + body


def error_response(status: int, message: str, error_type: str = "invalid_request_error",
                   code: str | None = None, close: bool = False) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})
    return response(status, body, close=close)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _header(head_lower: bytes, name: bytes) -> bytes | None:
    start = head_lower.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = head_lower.find(b"\r\n", start)
    return head_lower[start:end if end >= 0 else None].strip()


def _content_length(head_lower: bytes) -> int:
    if _header(head_lower, b"transfer-encoding") is not None:
        raise _BadRequest(411, "chunked request bodies are not supported; send Content-Length")
    raw = _header(head_lower, b"content-length")
    if raw is None:
        return 0
    if not raw.isdigit() or int(raw) > _MAX_BODY:
        raise _BadRequest(400, "invalid Content-Length")
    return int(raw)


class HttpProtocol(asyncio.Protocol):
    """One connection. ``handler`` is called once per complete request, in order."""

    def __init__(self, handler: Handler, connections: set[HttpProtocol]) -> None:
        self.handler = handler
        self.connections = connections
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self._continued = False
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        if self.task is not None:
            self.task.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self._process()

    def _process(self) -> None:
        while not self.closed and self.task is None:
            try:
                req = self._next_request()
            except _BadRequest as bad:
                self.write(error_response(bad.status, str(bad), close=True))
                self._close()
                return
            if req is None:
                return
            answer = self.handler(req)
            if isinstance(answer, bytes):
                self.write(answer)
                if not req.keep_alive:
                    self._close()
            else:
                self.task = asyncio.get_running_loop().create_task(self._run(answer, req.keep_alive))

    async def _run(self, answer: AsyncAnswer, keep_alive: bool) -> None:
        try:
            await answer(Conn(self))
        except asyncio.CancelledError:
            return  # the client went away: nothing left to answer
        except Exception:  # a bug in a handler must not take the server down
            log.exception("mock server handler failed")
            self.abort()
            return
        self.task = None
        if not keep_alive:
            self._close()
        elif self.buf:
            self._process()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def _next_request(self) -> Request | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD:
                raise _BadRequest(431, "request head too large")
            return None
        head = bytes(self.buf[:end])
        line_end = head.find(b"\r\n")
        parts = (head if line_end < 0 else head[:line_end]).split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        lower = head[line_end:].lower() if line_end >= 0 else b""
        total = end + 4 + _content_length(lower)
        if len(self.buf) < total:
            self._maybe_continue(lower)
            return None
        body = bytes(self.buf[end + 4:total])
        del self.buf[:total]
        self._continued = False
        connection = _header(lower, b"connection") or b""
        keep_alive = b"close" not in connection if parts[2] == b"HTTP/1.1" else b"keep-alive" in connection
        path = parts[1].partition(b"?")[0]
        return Request(parts[0], path, body, keep_alive)

    def _maybe_continue(self, lower: bytes) -> None:
        if not self._continued and _header(lower, b"expect") == b"100-continue":
            self._continued = True
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
