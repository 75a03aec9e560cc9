"""The request path.

    resolve model → admit (reserve) → cache lookup → executor (attempts, retries, fallbacks)
                  → settle (or release) → cache write (background)

Each step returns a value; nothing calls back up. The admission ticket is finished exactly once:
``settle`` on a served answer (cache hits included), ``release`` on any failure. For streams the
pipeline returns an ``OpenStream`` once the first chunk is in hand and the streaming writer
(streaming.py) takes over the ticket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.base import BackendRequest, BackendResponse, Chunk, EmbeddingRequest, Endpoint, Usage
from backends.errors import BackendProtocolError
from configs.schema import ModelConfig
from gateway.errors import InvalidRequest, ModelNotFound, PermissionDenied, to_http
from gateway.interfaces import (
    NOOP_TICKET,
    Admission,
    AdmitAll,
    CachedAnswer,
    CacheQuery,
    Estimate,
    NoCache,
    Outcome,
    Principal,
    ResponseCache,
    Ticket,
)
from gateway.metrics import Observation
from gateway.runtime import Runtime, RuntimeHolder, prefix_key
from gateway.tasks import TaskTracker
from gateway.tokens import TokenCounter
from routing import Execution

DEFAULT_MAX_OUTPUT = 4096


@dataclass(slots=True)
class RequestContext:
    request_id: str
    principal: Principal
    started: float
    deadline: float | None = None  # absolute loop.time()
    upstream_headers: Mapping[str, str] = field(default_factory=dict)
    cache_control: frozenset[str] = frozenset()
    session_key: str | None = None
    obs: Observation = field(default_factory=Observation)  # read by gateway.observe


@dataclass(slots=True)
class Served:
    body: dict[str, Any]
    model: str
    deployment: str | None
    attempts: int
    fallback_used: bool
    cache: str | None = None  # "exact" | "semantic" when served from cache
    hedge: str | None = None  # "won" | "lost" when a hedged duplicate was sent (routing/hedging.py)


@dataclass(slots=True)
class OpenStream:
    """A stream whose first chunk has arrived. The writer owns ``chunks`` and ``ticket`` from
    here: it must close the one and finish the other."""

    first: Chunk
    chunks: AsyncIterator[Chunk]
    execution: Execution[Any] | None
    ticket: Ticket
    cache_query: CacheQuery | None
    cached: CachedAnswer | None = None


class Pipeline:
    def __init__(
        self, holder: RuntimeHolder, tasks: TaskTracker, counter: TokenCounter,
        admission: Admission | None = None, cache: ResponseCache | None = None,
    ) -> None:
        self.holder = holder
        self.tasks = tasks
        self.counter = counter
        self.admission = admission or AdmitAll()
        self.cache = cache or NoCache()
        # Skip token counting at admission when nothing consumes the estimate.
        self._admission_active = not isinstance(self.admission, AdmitAll)
        self._cache_active = not isinstance(self.cache, NoCache)

    # ----- shared steps -------------------------------------------------------------------

    def resolve(self, runtime: Runtime, ctx: RequestContext, alias: str, wanted: str) -> ModelConfig:
        model = runtime.config.models.get(alias)
        if model is None:
            raise ModelNotFound(f"The model '{alias}' does not exist", param="model")
        allowed = ctx.principal.allowed_models
        if allowed is not None and alias not in allowed:
            raise PermissionDenied(f"this API key may not use model '{alias}'", param="model",
                                   code="model_not_allowed")
        if model.type != wanted:
            raise InvalidRequest(f"model '{alias}' is a {model.type} model and cannot serve this endpoint",
                                 param="model", code="model_type_mismatch")
        ctx.obs.model = alias
        return model

    def admit_now(self, ctx: RequestContext, model: ModelConfig, body: dict[str, Any]) -> Ticket | None:
        """The admission ticket when it is decided without I/O (the usual case: no coroutine on
        the request path), else None: then await ``admit``."""
        if not self._admission_active:
            return NOOP_TICKET
        return self.admission.admit_now(ctx.principal, self._estimate(ctx, model, body))

    async def admit(self, ctx: RequestContext, model: ModelConfig, body: dict[str, Any]) -> Ticket:
        if not self._admission_active:
            return NOOP_TICKET
        return await self.admission.admit(ctx.principal, self._estimate(ctx, model, body))

    def _estimate(self, ctx: RequestContext, model: ModelConfig, body: dict[str, Any]) -> Estimate:
        max_out = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(max_out, int):
            max_out = model.context_window or DEFAULT_MAX_OUTPUT
        n = body.get("n")
        n = n if isinstance(n, int) else 1
        return Estimate(model.name, self.counter.count_prompt(body), max_out * n, ctx.request_id)

    @staticmethod
    def finish(ticket: Ticket, outcome: Outcome | None, status: int) -> None:
        """Settle or release now (synchronous by the Ticket contract, so it cannot be lost to a
        client's cancellation)."""
        if outcome is not None:
            ticket.settle(outcome)
        else:
            ticket.release(status)

    def abandon(self, ticket: Ticket, exc: BaseException) -> None:
        """Release a ticket for a request that failed (its HTTP status) or whose client went away
        (cancelled or reset: 499)."""
        gone = not isinstance(exc, Exception) or isinstance(exc, ConnectionResetError)
        self.finish(ticket, None, 499 if gone else to_http(exc).status)

    @staticmethod
    def _upstream_body(runtime: Runtime, deployment: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body with the deployment's own model name (the alias when it has none)."""
        upstream = runtime.config.backends[deployment].model
        return {**body, "model": upstream} if upstream else body

    def _request(self, runtime: Runtime, ctx: RequestContext, endpoint: Endpoint, body: dict[str, Any],
                 deployment: str, stream: bool) -> BackendRequest:
        return BackendRequest(endpoint, self._upstream_body(runtime, deployment, body), stream,
                              ctx.upstream_headers, ctx.deadline)

    def _cache_query(self, ctx: RequestContext, alias: str, endpoint: Endpoint,
                     body: dict[str, Any], stream: bool) -> CacheQuery | None:
        if not self._cache_active or endpoint != "chat" or "bypass" in ctx.cache_control:
            return None
        return CacheQuery(ctx.principal.tenant, alias, body, stream, ctx.cache_control)

    async def _lookup(self, query: CacheQuery | None) -> CachedAnswer | None:
        if query is None or "refresh" in query.control:
            return None
        return await self.cache.lookup(query)

    # ----- non-streaming ------------------------------------------------------------------

    async def complete(self, ctx: RequestContext, endpoint: Endpoint, alias: str,
                       body: dict[str, Any]) -> Served:
        runtime = self.holder.current
        model = self.resolve(runtime, ctx, alias, "chat")
        ticket = self.admit_now(ctx, model, body)
        if ticket is None:
            ticket = await self.admit(ctx, model, body)
        try:
            served = await self._complete(runtime, ctx, endpoint, alias, body, ticket)
        except BaseException as exc:
            self.abandon(ticket, exc)
            raise
        return served

    async def _complete(self, runtime: Runtime, ctx: RequestContext, endpoint: Endpoint, alias: str,
                        body: dict[str, Any], ticket: Ticket) -> Served:
        query = self._cache_query(ctx, alias, endpoint, body, False)
        hit = await self._lookup(query)
        if hit is not None:
            usage = Usage.from_openai(hit.body.get("usage")) or Usage(0, 0)
            ctx.obs.cache = hit.kind
            self.finish(ticket, self.outcome(ctx, alias, None, usage, cached=True), 200)
            return Served(hit.body, alias, None, 0, False, hit.kind)

        async def attempt(name: str, deployment: str) -> BackendResponse:
            req = self._request(runtime, ctx, endpoint, body, deployment, False)
            t0 = time.perf_counter()
            try:
                return await runtime.backends[deployment].complete(req)
            finally:
                ctx.obs.upstream_s += time.perf_counter() - t0

        done = await runtime.executor.run(alias, attempt, **self._route(runtime, ctx, alias, body))
        ctx.obs.attempts, ctx.obs.fallback, ctx.obs.hedge = done.attempts, done.fallback_used, done.hedge
        resp = done.value
        usage = resp.usage or self._count_usage(body, resp.body, done.model)
        self.finish(ticket, self.outcome(ctx, done.model, done.deployment, usage), 200)
        if query is not None and "no-store" not in query.control:
            self.cache.store(query, resp.body)
        return Served(resp.body, done.model, done.deployment, done.attempts, done.fallback_used, hedge=done.hedge)

    def outcome(self, ctx: RequestContext, model: str, deployment: str | None, usage: Usage, *,
                 cached: bool = False, stream: bool = False, status: int = 200) -> Outcome:
        result = ctx.obs.outcome = Outcome(model, deployment, usage, status, time.perf_counter() - ctx.started,
                                           cached, stream)
        return result

    def _route(self, runtime: Runtime, ctx: RequestContext, alias: str, body: dict[str, Any]) -> dict[str, Any]:
        """Executor inputs: affinity keys, the client's deadline, how to close a losing hedge."""
        model = runtime.config.models[alias]
        chars = model.resilience.affinity.prefix_chars
        prefix = prefix_key(body, chars) if model.balance == "prefix_affinity" else None
        return {"session_key": ctx.session_key, "prefix_key": prefix, "deadline": ctx.deadline,
                "discard": _discard}

    def _count_usage(self, body: dict[str, Any], answer: dict[str, Any], model: str) -> Usage:
        text = "".join(
            str((c.get("message") or {}).get("content") or c.get("text") or "")
            for c in answer.get("choices", []) if isinstance(c, dict)
        )
        return Usage(self.counter.count_prompt(body, model), self.counter.count_text(text, model))

    # ----- streaming ----------------------------------------------------------------------

    async def open_stream(self, ctx: RequestContext, endpoint: Endpoint, alias: str,
                          body: dict[str, Any]) -> OpenStream:
        runtime = self.holder.current
        model = self.resolve(runtime, ctx, alias, "chat")
        ticket = self.admit_now(ctx, model, body)
        if ticket is None:
            ticket = await self.admit(ctx, model, body)
        try:
            return await self._open_stream(runtime, ctx, endpoint, alias, body, ticket)
        except BaseException as exc:
            self.abandon(ticket, exc)
            raise

    async def _open_stream(self, runtime: Runtime, ctx: RequestContext, endpoint: Endpoint, alias: str,
                           body: dict[str, Any], ticket: Ticket) -> OpenStream:
        query = self._cache_query(ctx, alias, endpoint, body, True)
        hit = await self._lookup(query)
        if hit is not None:
            ctx.obs.cache = hit.kind
            return OpenStream(Chunk(b"", {}), _empty(), None, ticket, None, hit)

        async def attempt(name: str, deployment: str) -> tuple[AsyncIterator[Chunk], Chunk]:
            req = self._request(runtime, ctx, endpoint, body, deployment, True)
            chunks = runtime.backends[deployment].stream(req)
            t0 = time.perf_counter()
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                raise BackendProtocolError(deployment, f"backend {deployment} sent an empty stream") from None
            except BaseException:
                await close_chunks(chunks)
                raise
            finally:
                ctx.obs.upstream_ttft_s += time.perf_counter() - t0
            return chunks, first

        done = await runtime.executor.run(alias, attempt, **self._route(runtime, ctx, alias, body))
        ctx.obs.attempts, ctx.obs.fallback, ctx.obs.hedge = done.attempts, done.fallback_used, done.hedge
        chunks, first = done.value
        store = query if query is not None and "no-store" not in query.control else None
        return OpenStream(first, chunks, done, ticket, store)

    # ----- embeddings ---------------------------------------------------------------------

    async def embed(self, ctx: RequestContext, alias: str, body: dict[str, Any]) -> Served:
        runtime = self.holder.current
        model = self.resolve(runtime, ctx, alias, "embedding")
        body_1 = {**body, "max_tokens": 1}
        ticket = self.admit_now(ctx, model, body_1)
        if ticket is None:
            ticket = await self.admit(ctx, model, body_1)
        try:
            async def attempt(name: str, deployment: str) -> BackendResponse:
                req = EmbeddingRequest(self._upstream_body(runtime, deployment, body),
                                       ctx.upstream_headers, ctx.deadline)
                return await runtime.backends[deployment].embed(req)  # type: ignore[attr-defined, no-any-return]

            done = await runtime.executor.run(alias, attempt)
        except BaseException as exc:
            self.abandon(ticket, exc)
            raise
        usage = done.value.usage or Usage(self.counter.count_prompt(body), 0)
        self.finish(ticket, self.outcome(ctx, done.model, done.deployment, usage), 200)
        return Served(done.value.body, done.model, done.deployment, done.attempts, done.fallback_used)


async def _empty() -> AsyncIterator[Chunk]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _discard(value: object) -> None:
    """Close a stream attempt that lost a hedge race (non-streaming values need nothing)."""
    if isinstance(value, tuple):
        await close_chunks(value[0])


async def close_chunks(chunks: AsyncIterator[Chunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await asyncio.shield(aclose())
