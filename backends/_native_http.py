"""HTTP plumbing for backends that translate a native upstream API (TGI, Ollama), on top of the
shared error mapping in ``backends/_http.py``.

Contracts:
- ``Budget`` owns the time limits of one call. Every wait goes through ``Budget.wait(phase, aw)``,
  which applies the tighter of the phase limit (``first_token``/``idle``), the call's ``total`` and
  the request ``deadline``; expiry raises ``BackendTimeout`` naming the limit that fired. A
  ``TimeoutError`` raised *inside* the awaitable (aiohttp's connect timeout) is not mistaken for
  the phase expiring.
- ``open_response`` sends a request and returns the response once headers arrived with a status
  below 400. Transport failures become ``BackendUnavailable`` (refused, reset, disconnected) or
  ``BackendTimeout(connect)``; error statuses become ``BackendHTTPError`` with the upstream's
  message and ``Retry-After``. The caller owns the returned response: streams release it in
  ``finally`` (``finish``) so closing the generator aborts the upstream request.
- ``iter_lines`` / ``iter_sse_data`` read a body under ``first_token`` for the first line or
  event and ``idle`` for the next ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

import aiohttp
import orjson

from backends._http import http_error_from_body, map_client_error
from backends.errors import BackendError, BackendProtocolError, BackendTimeout, TimeoutPhase
from configs.schema import Timeouts

T = TypeVar("T")

# Headers propagated from the gateway request to the upstream (correlation and tracing).
FORWARDED_HEADERS = ("x-request-id", "traceparent", "tracestate")
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, ValueError)


class Budget:
    """Time limits of one backend call, measured from construction on the running loop."""

    __slots__ = ("_end", "_loop", "backend", "deadline", "timeouts")

    def __init__(self, backend: str, timeouts: Timeouts, deadline: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self.backend = backend
        self.timeouts = timeouts
        self.deadline = deadline
        self._end = self._loop.time() + timeouts.total

    def limit(self, phase: TimeoutPhase) -> tuple[TimeoutPhase, float]:
        """The binding limit for a wait in ``phase``: (which limit, seconds left)."""
        now = self._loop.time()
        best: tuple[TimeoutPhase, float] = ("total", self._end - now)
        phase_s = {"first_token": self.timeouts.first_token, "idle": self.timeouts.idle}.get(phase)
        if phase_s is not None and phase_s < best[1]:
            best = (phase, phase_s)
        if self.deadline is not None and self.deadline - now < best[1]:
            best = ("deadline", self.deadline - now)
        return best

    async def wait(self, phase: TimeoutPhase, aw: Awaitable[T]) -> T:
        which, seconds = self.limit(phase)
        if seconds <= 0:
            close = getattr(aw, "close", None)  # an un-awaited coroutine would warn
            if callable(close):
                close()
            raise self._expired(which, 0.0)
        cm = asyncio.timeout(seconds)
        try:
            async with cm:
                return await aw
        except TimeoutError as exc:
            if cm.expired():
                raise self._expired(which, seconds) from None
            raise map_client_error(self.backend, exc) from exc

    def _expired(self, phase: TimeoutPhase, seconds: float) -> BackendTimeout:
        return BackendTimeout(self.backend, phase, self.timeouts.total if phase == "total" else seconds)


def client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """Only the connect phase is left to aiohttp; the other phases are ``Budget`` waits."""
    return aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect, sock_read=None)


def forward_headers(static: Mapping[str, str], incoming: Mapping[str, str],
                    api_key: str | None = None) -> dict[str, str]:
    headers = dict(static)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    lowered = {k.lower(): v for k, v in incoming.items()}
    for name in FORWARDED_HEADERS:
        if name in lowered:
            headers[name] = lowered[name]
    return headers


async def open_response(
    session: aiohttp.ClientSession, budget: Budget, url: str, body: Any, *,
    headers: Mapping[str, str], timeouts: Timeouts, phase: TimeoutPhase = "first_token",
) -> aiohttp.ClientResponse:
    """POST ``body`` as JSON; return the response (headers read, status < 400) or raise.

    ``phase`` bounds the wait for the headers: ``first_token`` for a stream (they come with the
    first token), ``total`` for a whole answer (they come after the whole generation, so a
    first-token limit would cut long answers short; see configs.schema.Timeouts)."""
    hdrs = {**headers, "Content-Type": "application/json"}
    try:
        resp = await budget.wait(phase, session.post(
            url, data=orjson.dumps(body), headers=hdrs, timeout=client_timeout(timeouts)))
    except BackendError:
        raise
    except _TRANSPORT_ERRORS as exc:
        raise map_client_error(budget.backend, exc) from exc
    if resp.status >= 400:
        try:
            raw = await budget.wait("idle", resp.read())
        except (BackendError, *_TRANSPORT_ERRORS):
            raw = b""
        finally:
            resp.release()
        raise http_error_from_body(budget.backend, resp.status, raw, resp.headers.get("Retry-After"))
    return resp


async def read_json(resp: aiohttp.ClientResponse, budget: Budget) -> dict[str, Any]:
    """Read a whole JSON object body; the response is released afterwards."""
    try:
        async with resp:
            raw = await budget.wait("idle", resp.read())
    except BackendError:
        raise
    except _TRANSPORT_ERRORS as exc:
        raise map_client_error(budget.backend, exc) from exc
    return loads_object(budget.backend, raw)


def loads_object(backend: str, raw: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BackendProtocolError(backend, f"malformed JSON from upstream: {raw[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise BackendProtocolError(backend, f"upstream JSON is not an object: {raw[:200]!r}")
    return parsed


async def _readline(resp: aiohttp.ClientResponse, budget: Budget, phase: TimeoutPhase) -> bytes:
    try:
        return await budget.wait(phase, resp.content.readline())
    except BackendError:
        raise
    except _TRANSPORT_ERRORS as exc:
        raise map_client_error(budget.backend, exc) from exc


async def iter_lines(resp: aiohttp.ClientResponse, budget: Budget) -> AsyncIterator[bytes]:
    """Non-empty body lines, stripped (NDJSON). Does not release ``resp``."""
    phase: TimeoutPhase = "first_token"
    while line := await _readline(resp, budget, phase):
        phase = "idle"
        line = line.strip()
        if line:
            yield line


async def iter_sse_data(resp: aiohttp.ClientResponse, budget: Budget) -> AsyncIterator[bytes]:
    """The ``data`` payload of each server-sent event (multi-line data joined by newlines).
    Comments and ``event``/``id``/``retry`` fields are skipped. Does not release ``resp``."""
    parts: list[bytes] = []
    phase: TimeoutPhase = "first_token"
    while True:
        line = await _readline(resp, budget, phase)
        stripped = line.rstrip(b"\r\n")
        if stripped.startswith(b"data:"):
            value = stripped[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
        elif not stripped and parts:
            yield b"\n".join(parts)
            parts = []
            phase = "idle"
        if not line:
            return


def finish(resp: aiohttp.ClientResponse, done: bool) -> None:
    """A finished stream returns its connection to the pool; an abandoned one (error, aclose,
    cancellation) closes it, which is how the upstream learns to stop generating."""
    if done:
        resp.release()
    else:
        resp.close()


async def probe(session: aiohttp.ClientSession, url: str, timeouts: Timeouts,
                headers: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """GET ``url`` for a health check: (ok, body or failure). Never raises; bounded by
    ``connect`` + 5 s."""
    timeout = aiohttp.ClientTimeout(total=timeouts.connect + 5.0, sock_connect=timeouts.connect)
    try:
        async with session.get(url, headers=headers, timeout=timeout) as resp:
            text = (await resp.text(errors="replace"))[:200]
            if resp.status == 200:
                return True, text
            return False, f"HTTP {resp.status}: {text}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
