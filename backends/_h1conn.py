"""One upstream HTTP/1.1 connection (an ``asyncio.Protocol`` fed to llhttp) and the per-request
watchdog that bounds it in time. The pool and the request API live in ``backends/_h1client.py``.

Contracts:
- A connection carries one request at a time: ``begin`` resets the response state and writes the
  whole request in one ``transport.write``. The response body is buffered as the parser yields it
  (``read_some`` hands out what arrived, ``read_all`` waits for the end); a stream's buffer is
  bounded by pausing the transport.
- Failures are recorded once in ``exc`` and raised by the next read: a parse error is
  ``BackendProtocolError``; losing the connection before the response ended is
  ``BackendUnavailable``, and ``StaleConnection`` (a subclass) when not one response byte
  arrived, which is the only case the client may retry. A body delimited by the close (no
  Content-Length, not chunked) ends cleanly at EOF.
- ``reusable`` is true only after a complete keep-alive response with nothing after it.
- ``Watchdog`` replaces per-read ``asyncio.timeout``: one timer per request whose end is pushed
  by ``touch`` (a wait starts), lifted by ``pause`` (the wait ended) and re-scheduled only when
  it fires early. On expiry it aborts the transport and
  records a ``BackendTimeout`` naming the binding limit: the phase (``first_token``/``idle``),
  the backend's ``total`` or the client's ``deadline``.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, cast

import httptools

from backends.errors import BackendError, BackendProtocolError, BackendTimeout, BackendUnavailable, TimeoutPhase

if TYPE_CHECKING:
    from collections.abc import Callable

_HIGH_WATER = 256 * 1024  # buffered stream bytes before the transport is paused


class StaleConnection(BackendUnavailable):
    """A connection closed before any byte of the response: nothing was processed upstream."""


class Watchdog:
    __slots__ = ("_handle", "_loop", "_on_expire", "_when", "backend", "hard_end", "hard_phase",
                 "hard_seconds", "limit", "phase", "soft_end")

    def __init__(self, backend: str, total: float, deadline: float | None,
                 phase: TimeoutPhase = "total", limit: float | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self.backend = backend
        self.hard_end, self.hard_seconds = now + total, total
        self.hard_phase: TimeoutPhase = "total"
        if deadline is not None and deadline < self.hard_end:
            self.hard_end, self.hard_phase, self.hard_seconds = deadline, "deadline", max(0.0, deadline - now)
        self.phase: TimeoutPhase = phase
        self.limit = limit
        self.soft_end = math.inf if limit is None else now + limit
        self._handle: asyncio.TimerHandle | None = None
        self._when = math.inf
        self._on_expire: Callable[[BackendTimeout], None] | None = None

    def remaining(self) -> tuple[float, BackendTimeout]:
        """Seconds left and the error to raise when they run out (for waits before arming)."""
        return min(self.soft_end, self.hard_end) - self._loop.time(), self.error()

    def error(self) -> BackendTimeout:
        if self.soft_end < self.hard_end:
            return BackendTimeout(self.backend, self.phase, self.limit or 0.0)
        return BackendTimeout(self.backend, self.hard_phase, self.hard_seconds)

    def arm(self, on_expire: Callable[[BackendTimeout], None]) -> None:
        self._on_expire = on_expire
        self._schedule(min(self.soft_end, self.hard_end))

    def touch(self) -> None:
        """Progress was made: the phase limit starts again from now."""
        if self.limit is not None:
            self.soft_end = end = self._loop.time() + self.limit
            if end < self._when:
                self._schedule(end)

    def pause(self) -> None:
        """The phase limit stops counting until the next ``touch`` (the timer is left scheduled
        and re-armed by ``_fire`` only if it comes due meanwhile)."""
        self.soft_end = math.inf

    def set_phase(self, phase: TimeoutPhase, limit: float) -> None:
        self.phase, self.limit = phase, limit

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._on_expire = None
        self._when = math.inf

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        end = min(self.soft_end, self.hard_end)
        if self._loop.time() < end:
            self._schedule(end)  # pushed by touch() since it was scheduled
            return
        on_expire, self._on_expire = self._on_expire, None
        self._when = math.inf
        if on_expire is not None:
            on_expire(self.error())


class H1Connection(asyncio.Protocol):
    def __init__(self, backend: str, on_lost: Callable[[H1Connection], None]) -> None:
        self.backend = backend
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.drain_timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.exc: BackendError | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = self.done = self.got_bytes = self.keep_alive = False
        self.extra = False  # bytes after the response: never reuse
        self.framed = False  # Content-Length or Transfer-Encoding present
        self.active = False
        self.max_buffer = 0  # 0: unbounded (whole-body reads)
        self._body: list[bytes] = []
        self._buffered = 0
        self.paused = False
        self.on_done: Callable[[H1Connection], None] | None = None

    # ---- request side -------------------------------------------------------------------

    def begin(self, data: bytes, stream: bool) -> bool:
        """Start a request; False when the connection is already closing (nothing was sent)."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        self._reset()
        self.active = True
        self.max_buffer = _HIGH_WATER if stream else 0
        transport.write(data)
        return True

    @property
    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.extra and not self.closed and self.exc is None

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    async def wait_for(self, complete: bool) -> None:
        """Until the head arrived, or the whole response when ``complete``."""
        while not (self.done if complete else self.head_done):
            await self._wait()

    def unbound(self) -> None:
        """Stop flow control: the rest of the body is read whole."""
        self.max_buffer = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def take_body(self) -> bytes:
        body, self._body = self._body, []
        return body[0] if len(body) == 1 else b"".join(body)

    async def read_some(self) -> bytes:
        """Body bytes received since the last call; b"" once the response is complete."""
        while not self._body:
            if self.done:
                return b""
            await self._wait()
        body, self._body = self._body, []
        self._buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return body[0] if len(body) == 1 else b"".join(body)

    def _wait(self) -> asyncio.Future[None]:
        if self.exc is not None:
            raise self.exc
        fut = self._waiter = self._loop.create_future()
        return fut

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, exc: BackendError) -> None:
        """Record the first failure, wake the reader and drop the connection."""
        if self.exc is None:
            self.exc = exc
        self._wake()
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.active or self.done:
            self.extra = True  # unsolicited or pipelined bytes: this connection is not clean
            self.abort()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        if self.done:  # bytes after a complete response (parsed in the same feed)
            self.extra = True
            self.abort()
        else:
            self.fail(BackendProtocolError(self.backend, f"backend {self.backend} sent malformed HTTP: {exc}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.done:
            if self.head_done and not self.framed and self.exc is None:
                self.done = True  # body delimited by the close
            elif not self.got_bytes:
                self.fail(StaleConnection(self.backend, f"backend {self.backend} closed the connection"))
            else:
                reason = f": {exc}" if exc else " mid-response"
                self.fail(BackendUnavailable(self.backend, f"backend {self.backend} closed the connection{reason}"))
        self._wake()
        self._on_lost(self)

    # ---- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:  # a second response to one request: stop parsing, drop the connection
            raise BackendProtocolError(self.backend, "unsolicited response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status >= 200:
            self.head_done = True
            self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        if self.max_buffer:
            self._buffered += len(body)
            if self._buffered > self.max_buffer and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:  # an interim 1xx response: the real one follows
            self.headers = []
            self.framed = False
            return
        self.done = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()
        if self.on_done is not None:
            self.on_done(self)
