"""HTTP handlers: parse, validate, hand to the pipeline, write JSON or SSE. Thin by design:
no error JSON here (middleware.py), no routing or caching decisions (pipeline.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from backends.base import Endpoint
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.keys import PIPELINE, RUNTIME
from gateway.metrics import OBSERVATION, Observation
from gateway.middleware import REQUEST_ID, principal_of
from gateway.pipeline import RequestContext, Served
from gateway.streaming import write_stream
from gateway.tracing import TRACEPARENT
from gateway.wire import parse_body, validate_chat, validate_completion, validate_embedding

CACHE_HEADER = "x-turnout-cache"
TIMEOUT_HEADER = "x-turnout-timeout-ms"
SESSION_HEADER = "x-turnout-session"
_FORWARDED = ("traceparent", "tracestate")


def _context(request: web.Request, body: dict[str, Any]) -> RequestContext:
    rid: str = request[REQUEST_ID]
    upstream = {"x-request-id": rid}
    for name in _FORWARDED:
        value = request.headers.get(name)
        if value is not None:
            upstream[name] = value
    traceparent = request.get(TRACEPARENT)  # set when tracing is on: the gateway's own span
    if traceparent is not None:
        upstream["traceparent"] = traceparent
    deadline = None
    timeout = request.headers.get(TIMEOUT_HEADER)
    if timeout is not None:
        try:
            ms = float(timeout)
        except ValueError:
            raise InvalidRequest(f"{TIMEOUT_HEADER} must be a number of milliseconds",
                                 param=TIMEOUT_HEADER) from None
        if ms <= 0:
            raise InvalidRequest(f"{TIMEOUT_HEADER} must be positive", param=TIMEOUT_HEADER)
        deadline = asyncio.get_running_loop().time() + ms / 1000
        upstream[TIMEOUT_HEADER] = timeout
    control = request.headers.get(CACHE_HEADER)
    user = body.get("user")
    return RequestContext(
        request_id=rid, principal=principal_of(request), started=time.perf_counter(),
        deadline=deadline, upstream_headers=upstream,
        cache_control=frozenset(v.strip() for v in control.lower().split(",")) if control else frozenset(),
        session_key=request.headers.get(SESSION_HEADER) or (user if isinstance(user, str) else None),
        obs=request.get(OBSERVATION) or Observation(),
    )


def _served_headers(served: Served, rid: str) -> dict[str, str]:
    headers = {"x-request-id": rid, "x-turnout-model": served.model}
    if served.cache is not None:
        headers[CACHE_HEADER] = f"hit-{served.cache}"
    else:
        headers["x-turnout-deployment"] = served.deployment or ""
        headers["x-turnout-attempts"] = str(served.attempts)
        if served.fallback_used:
            headers["x-turnout-fallback"] = served.model
        if served.hedge is not None:
            headers["x-turnout-hedge"] = served.hedge
    return headers


def _json(served: Served, rid: str) -> web.Response:
    return web.Response(body=orjson.dumps(served.body), content_type="application/json",
                        headers=_served_headers(served, rid))


async def _generate(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    body = parse_body(await request.read())
    alias = validate_chat(body) if endpoint == "chat" else validate_completion(body)
    ctx = _context(request, body)
    pipeline = request.app[PIPELINE]
    if not body.get("stream"):
        return _json(await pipeline.complete(ctx, endpoint, alias, body), ctx.request_id)
    opened = await pipeline.open_stream(ctx, endpoint, alias, body)
    if opened.execution is not None:
        done = opened.execution
        served = Served({}, done.model, done.deployment, done.attempts, done.fallback_used, hedge=done.hedge)
    else:
        served = Served({}, alias, None, 0, False, opened.cached.kind if opened.cached else None)
    return await write_stream(request, pipeline, ctx, opened, body, _served_headers(served, ctx.request_id))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completion")


async def embeddings(request: web.Request) -> web.StreamResponse:
    body = parse_body(await request.read())
    alias = validate_embedding(body)
    ctx = _context(request, body)
    return _json(await request.app[PIPELINE].embed(ctx, alias, body), ctx.request_id)


def _model_object(name: str, owned_by: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owned_by}


async def list_models(request: web.Request) -> web.Response:
    allowed = principal_of(request).allowed_models
    models = request.app[RUNTIME].current.config.models.values()
    data = [_model_object(m.name, m.owned_by) for m in models if allowed is None or m.name in allowed]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    allowed = principal_of(request).allowed_models
    model = request.app[RUNTIME].current.config.models.get(name)
    if model is None or (allowed is not None and name not in allowed):
        raise ModelNotFound(f"The model '{name}' does not exist", param="model")
    return web.Response(body=orjson.dumps(_model_object(model.name, model.owned_by)),
                        content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    """Ready when a config is loaded and at least one backend reports healthy."""
    runtime = request.app[RUNTIME].current
    names = list(runtime.backends)
    results = await asyncio.gather(*(runtime.backends[n].health() for n in names))
    states = {n: {"ok": h.ok, "detail": h.detail} for n, h in zip(names, results, strict=True)}
    ok = any(h.ok for h in results)
    body = {"status": "ready" if ok else "unavailable", "config": runtime.config.source, "backends": states}
    return web.Response(status=200 if ok else 503, body=orjson.dumps(body), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
