"""Answers of the mock HTTP server: generation endpoints, failure modes on the wire, metrics.

Failure modes over HTTP (drawn per request, see mock_engine):
- http_500 / http_429 / context_length: the OpenAI error JSON with that status (429 carries
  ``Retry-After: 1``);
- timeout: never answers (the connection stays open until the client gives up);
- reset: the connection is aborted as soon as the request is read;
- stream_cut: half the SSE events are sent, then the connection is aborted (non-streaming:
  the headers and half the body, then abort);
- malformed_chunk: half the events, then ``data: {not json`` and a normal end (non-streaming:
  a 200 whose body is not JSON).
Answers without delay and without failure are built synchronously (the fast path).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from random import Random
from typing import Any

import orjson

from backends.mock import LoadGauges
from backends.mock_engine import (
    HTTP_FAIL_MODES,
    Kind,
    MockError,
    Plan,
    draw_failure,
    http_failure,
    plan,
)
from backends.mock_http import Answer, Conn, error_response, response
from backends.mock_render import embeddings, render, render_chunks
from configs.schema import MockSpec

_SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n")
_BATCH_S = 0.004
_PLAN_CACHE_SIZE = 1024


@dataclass(slots=True)
class Stats:
    connections: int = 0
    requests: int = 0
    in_flight: int = 0
    disconnects: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class ServerState:
    """Everything the server's answers read; ``spec`` and ``gauges`` change via /mock/config."""

    spec: MockSpec
    model: str = "mock"
    gauges: LoadGauges = field(default_factory=LoadGauges)
    rng: Random = field(default_factory=Random)
    stats: Stats = field(default_factory=Stats)
    # (endpoint, raw body) -> (plan, stream?): repeated load-test bodies skip parsing and
    # planning (deterministic for a given spec). Bounded; cleared whenever the spec changes.
    plans: dict[tuple[Kind, bytes], tuple[Plan, bool]] = field(default_factory=dict)

    def set_spec(self, spec: MockSpec) -> None:
        self.spec = spec
        self.plans.clear()


def mock_error(err: MockError) -> bytes:
    extra = b"Retry-After: %d\r\n" % round(err.retry_after) if err.retry_after is not None else b""
    return response(err.status, orjson.dumps(err.body()), extra=extra)


def json_body(raw: bytes) -> dict[str, Any] | bytes:
    """The parsed JSON object, or the 400 answer for anything else."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error_response(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.")
    return body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _abort(conn: Conn) -> None:
    conn.abort()


def _sync_failure(state: ServerState, mode: str | None, prompt_tokens: int) -> Answer | None:
    """The answer for failure modes that strike before any byte of the response, else None."""
    if mode in HTTP_FAIL_MODES:
        return mock_error(http_failure(mode, prompt_tokens, state.spec.context_window))
    if mode == "reset":
        return _abort
    if mode == "timeout":
        return _Hang(state).run
    return None


def _planned(state: ServerState, kind: Kind, raw: bytes) -> tuple[Plan, bool] | bytes:
    """(plan, stream?) for a request body, or the 400 answer."""
    hit = state.plans.get((kind, raw))
    if hit is not None:
        return hit
    body = json_body(raw)
    if isinstance(body, bytes):
        return body
    try:
        planned = plan(kind, body, state.spec, state.model), body.get("stream") is True
    except MockError as err:
        return mock_error(err)
    if len(state.plans) >= _PLAN_CACHE_SIZE:
        state.plans.clear()
    state.plans[(kind, raw)] = planned
    return planned


def generate(state: ServerState, kind: Kind, raw: bytes) -> Answer:
    """POST /v1/chat/completions and /v1/completions."""
    state.stats.requests += 1
    planned = _planned(state, kind, raw)
    if isinstance(planned, bytes):
        return planned
    p, stream = planned
    mode = draw_failure(state.spec, state.rng)
    failed = _sync_failure(state, mode, p.prompt_tokens)
    if failed is not None:
        return failed
    state.stats.prompt_tokens += p.prompt_tokens
    state.stats.completion_tokens += p.completion_tokens
    if stream:
        return _Streamer(state, p, mode).run
    tps = state.spec.tokens_per_s
    delay = state.spec.first_token_ms / 1000 + (p.max_pieces / tps if tps > 0 else 0.0)
    if delay <= 0 and mode is None:
        return response(200, orjson.dumps(render(p)))
    return _Delayed(state, orjson.dumps(render(p)), delay, mode).run


def embed(state: ServerState, raw: bytes) -> Answer:
    """POST /v1/embeddings."""
    state.stats.requests += 1
    body = json_body(raw)
    if isinstance(body, bytes):
        return body
    try:
        out = embeddings(body, state.spec, state.model)
    except MockError as err:
        return mock_error(err)
    mode = draw_failure(state.spec, state.rng)
    tokens = out["usage"]["prompt_tokens"]
    failed = _sync_failure(state, mode, tokens)
    if failed is not None:
        return failed
    state.stats.prompt_tokens += tokens
    delay = state.spec.first_token_ms / 1000
    if delay <= 0 and mode is None:
        return response(200, orjson.dumps(out))
    return _Delayed(state, orjson.dumps(out), delay, mode).run


class _Tracked:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def run(self, conn: Conn) -> None:
        stats = self.state.stats
        stats.in_flight += 1
        try:
            await self.answer(conn)
        except asyncio.CancelledError:
            stats.disconnects += 1
            raise
        finally:
            stats.in_flight -= 1

    async def answer(self, conn: Conn) -> None:
        raise NotImplementedError


class _Hang(_Tracked):
    """Never answers; ends when the client goes away."""

    async def answer(self, conn: Conn) -> None:
        await asyncio.get_running_loop().create_future()


class _Delayed(_Tracked):
    """A whole JSON answer after ``delay`` seconds, with the late failure modes."""

    def __init__(self, state: ServerState, body: bytes, delay: float, mode: str | None) -> None:
        super().__init__(state)
        self.body, self.delay, self.mode = body, delay, mode

    async def answer(self, conn: Conn) -> None:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if self.mode == "malformed_chunk":
            conn.write(response(200, b"{not json"))
        elif self.mode == "stream_cut":
            whole = response(200, self.body)
            conn.write(whole[: len(whole) - len(self.body) // 2])
            conn.abort()
        else:
            conn.write(response(200, self.body))


class _Streamer(_Tracked):
    """An SSE answer, paced by first_token_ms and tokens_per_s (sleeps batched per 4 ms)."""

    def __init__(self, state: ServerState, p: Plan, mode: str | None) -> None:
        super().__init__(state)
        self.plan, self.mode = p, mode
        self.spec = state.spec

    async def answer(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        chunks = list(render_chunks(self.plan))
        cut = max(1, len(chunks) // 2) if self.mode in ("stream_cut", "malformed_chunk") else -1
        conn.write(_SSE_HEAD)
        if self.spec.first_token_ms > 0:
            await asyncio.sleep(self.spec.first_token_ms / 1000)
        origin, done, rate = loop.time(), 0, self.spec.tokens_per_s
        for index, (cost, payload) in enumerate(chunks):
            if index == cut:
                self._fail(conn)
                return
            done += cost
            debt = origin + done / rate - loop.time() if rate > 0 else 0.0
            if debt >= _BATCH_S:
                await asyncio.sleep(debt)
            conn.write(_chunk(b"data: " + orjson.dumps(payload) + b"\n\n"))
            await conn.drain()
        conn.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    def _fail(self, conn: Conn) -> None:
        if self.mode == "stream_cut":
            conn.abort()
            return
        conn.write(_chunk(b"data: {not json\n\n") + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


def _gauge(name: str, help_text: str, value: float, model: str) -> str:
    return (f"# HELP {name} {help_text}\n# TYPE {name} gauge\n"
            f'{name}{{model_name="{model}"}} {float(value)}\n')


def metrics(state: ServerState) -> bytes:
    """GET /metrics: vLLM's load gauges (configured values, else live in-flight / zero)."""
    g, s = state.gauges, state.stats
    running = float(s.in_flight) if g.running is None else g.running
    kv = 0.0 if g.kv_cache_usage is None else g.kv_cache_usage
    text = "".join((
        _gauge("vllm:num_requests_running", "Number of requests running.", running, state.model),
        _gauge("vllm:num_requests_waiting", "Number of requests waiting.", g.waiting or 0.0, state.model),
        _gauge("vllm:gpu_cache_usage_perc", "KV-cache usage (1 = 100%).", kv, state.model),
        _gauge("vllm:kv_cache_usage_perc", "KV-cache usage (1 = 100%).", kv, state.model),
        f"# TYPE vllm:prompt_tokens_total counter\n"
        f'vllm:prompt_tokens_total{{model_name="{state.model}"}} {float(s.prompt_tokens)}\n',
        f"# TYPE vllm:generation_tokens_total counter\n"
        f'vllm:generation_tokens_total{{model_name="{state.model}"}} {float(s.completion_tokens)}\n',
    ))
    return response(200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8")


def models(state: ServerState) -> bytes:
    body = {"object": "list", "data": [
        {"id": state.model, "object": "model", "created": int(time.time()), "owned_by": "turnout-mock"},
    ]}
    return response(200, orjson.dumps(body))
