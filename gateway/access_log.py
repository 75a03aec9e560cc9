"""Structured JSON access log: one line per request, written off the request path.

``add`` only appends a tuple to a bounded buffer (no formatting, no I/O); ``run`` (a background
task) formats a batch with orjson every ``FLUSH_S`` and writes it in a worker thread. When the
buffer is full, lines are dropped and counted (``dropped``) rather than slowing requests down.
``drain`` writes what is left at shutdown. Levels: debug/info log every request, warning only
4xx/5xx, error only 5xx.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any

import orjson
from aiohttp import web

from configs.observability import AccessLogConfig
from gateway.metrics import Observation

FLUSH_S = 0.2
MAX_BUFFER = 50_000
_MIN_STATUS = {"debug": 0, "info": 0, "warning": 400, "error": 500}

Entry = tuple[float, str | None, str, str, int, str, float, Observation, str | None]


class AccessLog:
    def __init__(self, cfg: AccessLogConfig, stream: IO[bytes] | None = None) -> None:
        self._min_status = _MIN_STATUS[cfg.level]
        self._debug = cfg.level == "debug"
        self._path = cfg.path
        self._stream = stream
        self._buffer: list[Entry] = []
        self.dropped = 0

    def add(self, request: web.Request, obs: Observation, tenant: str, status: int, latency_s: float,
            request_id: str | None) -> None:
        if status < self._min_status:
            return
        if len(self._buffer) >= MAX_BUFFER:
            self.dropped += 1
            return
        self._buffer.append((time.time(), request_id, request.method, request.path, status, tenant, latency_s,
                             obs, request.headers.get("traceparent")))

    def format(self, entry: Entry) -> dict[str, Any]:
        ts, rid, method, path, status, tenant, latency, obs, trace = entry
        out = obs.outcome
        line: dict[str, Any] = {
            "ts": round(ts, 6), "request_id": rid, "method": method, "path": path, "status": status,
            "tenant": tenant, "model": out.model if out is not None and out.model else obs.model,
            "deployment": out.deployment if out is not None else None,
            "prompt_tokens": out.usage.prompt_tokens if out is not None else None,
            "completion_tokens": out.usage.completion_tokens if out is not None else None,
            "latency_ms": round(latency * 1000, 3), "upstream_ms": round(obs.upstream_s * 1000, 3),
            "stream": out.stream if out is not None else None, "cache": obs.cache,
            "attempts": obs.attempts, "fallback": obs.fallback,
        }
        if obs.first_byte:
            line["ttft_ms"] = round((obs.first_byte - obs.started) * 1000, 3)
        if trace is not None:
            line["traceparent"] = trace
        if self._debug:
            line["upstream_ttft_ms"] = round(obs.upstream_ttft_s * 1000, 3)
        return line

    def render(self) -> bytes:
        batch, self._buffer = self._buffer, []
        return b"".join(orjson.dumps(self.format(e)) + b"\n" for e in batch)

    def _write(self, data: bytes) -> None:
        if self._stream is not None:
            self._stream.write(data)
            self._stream.flush()
        elif self._path is not None:
            with open(self._path, "ab") as fh:
                fh.write(data)
        else:
            sys.stderr.buffer.write(data)
            sys.stderr.buffer.flush()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            if self._buffer:
                await asyncio.to_thread(self._write, self.render())

    async def drain(self) -> None:
        if self._buffer:
            await asyncio.to_thread(self._write, self.render())
