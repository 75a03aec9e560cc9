"""Knobs and records shared by the fake upstream servers (TGI, Ollama, OpenAI-for-litellm).

A test sets the knobs before calling the backend and reads the records afterwards:
``requests``/``headers`` hold what each handler received, ``disconnected`` is set when a
streaming handler saw the client go away (a write failed or the handler was cancelled).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Control:
    tokens: list[str] = field(default_factory=lambda: ["Hello", " world", "!"])
    fail_status: int | None = None        # answer every generation call with this status
    fail_body: bytes = b""
    retry_after: str | None = None
    first_delay: float = 0.0              # before response headers (non-stream) / first chunk
    token_delay: float = 0.0              # between stream chunks
    malformed_after: int | None = None    # emit a garbage line after this many chunks
    stream_error: str | None = None       # emit an in-stream error event after the first chunk
    cut_after: int | None = None          # drop the connection after this many chunks
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, request: web.Request, body: dict[str, Any]) -> None:
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})

    def error_response(self, body: bytes) -> web.Response:
        headers = {"Content-Type": "application/json"}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        assert self.fail_status is not None
        return web.Response(status=self.fail_status, body=self.fail_body or body, headers=headers)


async def write_or_note_disconnect(resp: web.StreamResponse, data: bytes, control: Control) -> bool:
    """Write one piece of a stream; False (and ``disconnected`` set) once the client is gone."""
    try:
        await resp.write(data)
    except (ConnectionResetError, ConnectionError):
        control.disconnected.set()
        return False
    except asyncio.CancelledError:  # the server cancels handlers of lost connections
        control.disconnected.set()
        raise
    return True


async def sleep_or_note_disconnect(request: web.Request, seconds: float, control: Control) -> bool:
    """Sleep between chunks, watching the transport: False once the client disconnected."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        transport = request.transport
        if transport is None or transport.is_closing():
            control.disconnected.set()
            return False
        try:
            await asyncio.sleep(min(0.01, max(end - loop.time(), 0)))
        except asyncio.CancelledError:  # the server cancels handlers of lost connections
            control.disconnected.set()
            raise
    return True
