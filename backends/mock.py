"""In-process mock backend (kind: mock): the ``Backend`` and ``SupportsEmbeddings`` Protocols
without sockets, driven by ``MockSpec`` through the shared engine (mock_engine.py).

It behaves like a real upstream seen through ``openai_compat``:
- timing: the first chunk (or the whole non-streaming answer) after ``first_token_ms``, then
  ``tokens_per_s``; sleeps are batched (one per >= 4 ms of tokens), so fast specs stay cheap;
- its own ``timeouts`` (first_token, idle, total) and the request deadline apply: a wait longer
  than the limit sleeps the limit and raises ``BackendTimeout`` with that phase;
- failures (``fail_mode`` drawn per request with ``fail_rate``) surface as the errors a real
  upstream produces: http_500 / http_429 / context_length → ``BackendHTTPError``; reset →
  ``BackendUnavailable`` before anything is sent; timeout → hangs until a timeout (or the
  caller's cancellation); stream_cut → ``BackendUnavailable`` and malformed_chunk →
  ``BackendProtocolError`` after half the chunks (non-streaming: instead of the body);
- invalid requests → ``BackendHTTPError(400)`` with the OpenAI error fields.
Counters (``calls``, ``in_flight``, ``cancelled``) let tests see what reached the upstream.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from random import Random

import aiohttp
import orjson

from backends.base import BackendRequest, BackendResponse, Chunk, EmbeddingRequest, Health, Usage
from backends.errors import (
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    TimeoutPhase,
)
from backends.mock_engine import (
    HTTP_FAIL_MODES,
    MockError,
    Plan,
    draw_failure,
    effective_fail_rate,
    http_failure,
    plan,
)
from backends.mock_render import embeddings, render, render_chunks
from configs.schema import BackendConfig, MockSpec, Timeouts

_BATCH_S = 0.004  # pacing debt below this is carried to the next token instead of slept
_DOWN_MODES = frozenset({"http_500", "reset", "timeout"})


@dataclass(frozen=True, slots=True)
class LoadGauges:
    """vLLM-style load signals reported by ``health``; None: report live in-flight/zero."""

    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None


class _Clock:
    """Applies the backend timeouts and the request deadline to every wait."""

    def __init__(self, backend: str, timeouts: Timeouts, deadline: float | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.backend = backend
        self.timeouts = timeouts
        self.start = self.loop.time()
        self.deadline = deadline

    async def wait(self, delay: float, phase: TimeoutPhase) -> None:
        now = self.loop.time()
        limit = self.timeouts.idle if phase == "idle" else self.timeouts.first_token
        bounds = [(limit, phase), (self.start + self.timeouts.total - now, "total")]
        if self.deadline is not None:
            bounds.append((self.deadline - now, "deadline"))
        allowed, which = min(bounds, key=lambda b: b[0])
        if delay <= allowed:
            if delay > 0:
                await asyncio.sleep(delay)
            return
        await asyncio.sleep(max(0.0, allowed))
        seconds = self.timeouts.total if which == "total" else allowed
        raise BackendTimeout(self.backend, which, seconds)


class _Pacer:
    """Sleeps so that token ``k`` leaves no earlier than ``k / tokens_per_s`` after the first."""

    def __init__(self, clock: _Clock, tokens_per_s: float) -> None:
        self.clock = clock
        self.rate = tokens_per_s
        self.origin = clock.loop.time()
        self.done = 0

    async def advance(self, tokens: int) -> None:
        if self.rate <= 0 or tokens <= 0:
            return
        self.done += tokens
        debt = self.origin + self.done / self.rate - self.clock.loop.time()
        if debt >= _BATCH_S:
            await self.clock.wait(debt, "idle")


def _http_error(backend: str, err: MockError) -> BackendHTTPError:
    return BackendHTTPError(
        backend, err.status, err.message, error_type=err.error_type, code=err.code, param=err.param,
        retry_after=err.retry_after,
    )


class MockBackend:
    """See the module docstring. ``session`` is accepted for the registry's signature, unused."""

    def __init__(
        self, cfg: BackendConfig, session: aiohttp.ClientSession | None = None, *, rng: Random | None = None,
    ) -> None:
        self.name = cfg.name
        self.spec = cfg.mock or MockSpec()
        self.model = cfg.model or cfg.name
        self.timeouts = cfg.timeouts
        self.gauges = LoadGauges()
        self.calls = 0
        self.in_flight = 0
        self.cancelled = 0
        self._rng = rng or Random()

    def set_spec(self, spec: MockSpec) -> None:
        """Change behaviour for later requests (tests: make a healthy backend fail)."""
        self.spec = spec

    def _plan(self, req: BackendRequest) -> Plan:
        try:
            return plan(req.endpoint, req.body, self.spec, self.model)
        except MockError as err:
            raise _http_error(self.name, err) from None

    async def _fail_early(self, mode: str | None, clock: _Clock, prompt_tokens: int) -> None:
        """Act out the failure modes that strike before any byte of the answer."""
        if mode in HTTP_FAIL_MODES:
            raise _http_error(self.name, http_failure(mode, prompt_tokens, self.spec.context_window))
        if mode == "reset":
            raise BackendUnavailable(self.name, f"connection to {self.name} reset by peer (mock)")
        if mode == "timeout":
            await clock.wait(math.inf, "first_token")

    def _fail_late(self, mode: str | None) -> None:
        if mode == "stream_cut":
            raise BackendUnavailable(self.name, f"{self.name} closed the connection mid-response (mock)")
        if mode == "malformed_chunk":
            raise BackendProtocolError(self.name, f"{self.name} sent invalid JSON (mock)")

    def _generation_s(self, p: Plan) -> float:
        tps = self.spec.tokens_per_s
        return p.max_pieces / tps if tps > 0 else 0.0

    async def complete(self, req: BackendRequest) -> BackendResponse:
        self.calls += 1
        self.in_flight += 1
        try:
            p = self._plan(req)
            mode = draw_failure(self.spec, self._rng)
            clock = _Clock(self.name, self.timeouts, req.deadline)
            await self._fail_early(mode, clock, p.prompt_tokens)
            await clock.wait(self.spec.first_token_ms / 1000 + self._generation_s(p), "first_token")
            self._fail_late(mode)
            return BackendResponse(render(p), Usage(p.prompt_tokens, p.completion_tokens))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def stream(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        self.calls += 1
        self.in_flight += 1
        try:
            p = self._plan(req)
            mode = draw_failure(self.spec, self._rng)
            clock = _Clock(self.name, self.timeouts, req.deadline)
            await self._fail_early(mode, clock, p.prompt_tokens)
            await clock.wait(self.spec.first_token_ms / 1000, "first_token")
            chunks = list(render_chunks(p))
            cut = max(1, len(chunks) // 2) if mode in ("stream_cut", "malformed_chunk") else -1
            pacer = _Pacer(clock, self.spec.tokens_per_s)
            for index, (cost, payload) in enumerate(chunks):
                if index == cut:
                    self._fail_late(mode)
                await pacer.advance(cost)
                trailer = not payload["choices"]
                usage = Usage(p.prompt_tokens, p.completion_tokens) if trailer else None
                yield Chunk(orjson.dumps(payload), payload, usage, trailer)
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def embed(self, req: EmbeddingRequest) -> BackendResponse:
        self.calls += 1
        try:
            body = embeddings(req.body, self.spec, self.model)
        except MockError as err:
            raise _http_error(self.name, err) from None
        mode = draw_failure(self.spec, self._rng)
        clock = _Clock(self.name, self.timeouts, req.deadline)
        await self._fail_early(mode, clock, body["usage"]["prompt_tokens"])
        await clock.wait(self.spec.first_token_ms / 1000, "first_token")
        self._fail_late(mode)
        return BackendResponse(body, Usage(body["usage"]["prompt_tokens"], 0))

    async def health(self) -> Health:
        down = self.spec.fail_mode in _DOWN_MODES and effective_fail_rate(self.spec) >= 1.0
        g = self.gauges
        return Health(
            ok=not down, detail=f"mock: always {self.spec.fail_mode}" if down else "mock",
            waiting=0.0 if g.waiting is None else g.waiting,
            running=float(self.in_flight) if g.running is None else g.running,
            kv_cache_usage=0.0 if g.kv_cache_usage is None else g.kv_cache_usage,
        )

    async def aclose(self) -> None:
        return None
