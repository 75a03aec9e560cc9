"""Shared HTTP plumbing for backends that speak over aiohttp: deadlines, error mapping and
line reading with per-phase timeouts.

``Deadline`` keeps one absolute end time (the tighter of the backend's total timeout and the
client's deadline) and hands out the limit for each wait, so every phase is bounded by both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
import orjson

from backends.errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    TimeoutPhase,
)

T = TypeVar("T")


class Deadline:
    def __init__(self, backend: str, total: float, client_deadline: float | None) -> None:
        self.backend = backend
        loop_now = asyncio.get_running_loop().time()
        self.end = loop_now + total
        self.total = total
        self.client_bound = client_deadline is not None and client_deadline < self.end
        if client_deadline is not None and client_deadline < self.end:
            self.end = client_deadline

    async def wait(self, awaitable: Awaitable[T], phase: TimeoutPhase, limit: float | None) -> T:
        """Await with ``min(limit, time left)``; a timeout becomes BackendTimeout naming the
        phase that actually expired."""
        left = self.end - asyncio.get_running_loop().time()
        if limit is None or left <= limit:
            phase = "deadline" if self.client_bound else "total"
            limit = left
        if limit <= 0:
            raise BackendTimeout(self.backend, phase, self.total if phase == "total" else 0.0)
        try:
            async with asyncio.timeout(limit):
                return await awaitable
        except TimeoutError:
            raise BackendTimeout(self.backend, phase, limit) from None


def map_client_error(backend: str, exc: BaseException) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return BackendTimeout(backend, "connect", 0.0)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return BackendUnavailable(backend, f"cannot connect to backend {backend}: {exc.os_error}")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return BackendUnavailable(backend, f"backend {backend} closed the connection: {exc}")
    return BackendUnavailable(backend, f"backend {backend} failed: {type(exc).__name__}: {exc}")


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def http_error_from_body(backend: str, status: int, raw: bytes, retry_after: str | None) -> BackendHTTPError:
    """Build the error from an upstream error body: OpenAI's ``{"error": {...}}``, TGI's and
    Ollama's ``{"error": "..."}`` or plain text."""
    message, error_type, code, param = raw.decode("utf-8", "replace")[:2000] or f"HTTP {status}", None, None, None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data.get("detail"))
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            error_type = _str_or_none(err.get("type"))
            code = _str_or_none(err.get("code"))
            param = _str_or_none(err.get("param"))
        elif isinstance(err, str):
            message = err
            error_type = _str_or_none(data.get("error_type"))
        elif isinstance(data.get("message"), str):
            message = data["message"]
    return BackendHTTPError(
        backend, status, message, error_type=error_type, code=code, param=param,
        retry_after=parse_retry_after(retry_after),
    )


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


async def raise_for_status(backend: str, resp: aiohttp.ClientResponse) -> None:
    if resp.status >= 400:
        raw = await resp.read()
        raise http_error_from_body(backend, resp.status, raw, resp.headers.get("Retry-After"))

