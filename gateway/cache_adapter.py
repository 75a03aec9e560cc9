"""Adapts the ``cache`` package to ``gateway.interfaces.ResponseCache``.

Wiring (app.py calls ``install(app, cfg)`` when ``cfg.cache`` is set):
- ``app[RESPONSE_CACHE]`` becomes a ``CacheAdapter``; its Redis client, embedding thread and
  index listener live in a ``cleanup_ctx`` (started before the pipeline is built, closed after
  background writes were drained).
- ``/v1/cache/invalidate`` and ``/v1/cache/feedback`` are mounted as a sub-app
  (``build_cache_admin_routes``); the parent's auth middleware applies, and a caller only ever
  touches its own tenant's entries.
- A ``CONFIG_LISTENERS`` entry: a reload applies the new per-request policies (``apply_config``).

Failure policy: the cache never fails a request. A lookup error (Redis down...) is logged and
served as a miss; writes run as tracked background tasks, off the request path.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from cache.build import CacheRuntime, build_cache
from cache.embedders import Embedder
from cache.keys import RequestKey, request_key
from cache.service import TurnoutCache
from configs.schema import GatewayConfig
from gateway.errors import InvalidRequest
from gateway.interfaces import CachedAnswer, CacheQuery
from gateway.keys import CONFIG_LISTENERS, RESPONSE_CACHE, TASKS
from gateway.middleware import principal_of
from gateway.observe import RECORDER

log = logging.getLogger("turnout.cache")

CACHE_REGISTRY = web.AppKey("cache_registry", CollectorRegistry)
Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class CacheAdapter:
    """ResponseCache over ``TurnoutCache``. ``spawn`` runs the background writes (the app's
    TaskTracker); ``start``/``aclose`` (or ``async with``) bound its resources."""

    def __init__(self, runtime: CacheRuntime, spawn: Spawn) -> None:
        self.runtime = runtime
        self.cache: TurnoutCache = runtime.cache
        self._spawn = spawn

    async def start(self) -> None:
        await self.runtime.start()

    async def aclose(self) -> None:
        await self.runtime.aclose()

    async def __aenter__(self) -> CacheAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @staticmethod
    def _key(query: CacheQuery) -> RequestKey:
        key: RequestKey | None = query.memo.get("key")
        if key is None:
            key = query.memo["key"] = request_key(query.tenant, query.model, query.body)
        return key

    async def lookup(self, query: CacheQuery) -> CachedAnswer | None:
        try:
            hit = await self.cache.lookup(query.tenant, query.model, query.body, query.control, self._key(query))
        except (RedisError, OSError):
            log.warning("cache lookup failed; serving as a miss", exc_info=True)
            return None
        return None if hit is None else CachedAnswer(hit.body, hit.kind, hit.key)

    async def apply_config(self, cfg: GatewayConfig) -> None:
        """After a reload: lookups and writes from now on use the new TTLs, thresholds, route
        overrides and semantic on/off (an entry keeps the TTL it was written with). The store, the index and the
        models were built at startup; a change to them is logged and applies after a restart."""
        if cfg.cache is None:  # removed: the cache stays until a restart (server.reload says so)
            return
        self.cache.cfg = merged = self.cache.cfg.with_policies_of(cfg.cache)
        log.info("cache policies reloaded")
        if cfg.cache.semantic_enabled and self.cache.semantic is None:
            log.warning("semantic matching was turned on: its index starts after a restart")
        # A file without a semantic section says nothing about the index's build settings.
        wanted = cfg.cache if cfg.cache.semantic_enabled else dataclasses.replace(cfg.cache, semantic=merged.semantic)
        if merged != wanted:
            log.warning("cache settings other than TTLs, thresholds, routes and semantic on/off "
                        "changed: they apply after a restart")

    def store(self, query: CacheQuery, body: dict[str, Any]) -> None:
        self._spawn(self._store(query, body))

    async def _store(self, query: CacheQuery, body: dict[str, Any]) -> None:
        try:
            await self.cache.put(query.tenant, query.model, query.body, body, query.control, self._key(query))
        except (RedisError, OSError):
            log.warning("cache write failed", exc_info=True)


def build_response_cache(cfg: GatewayConfig, spawn: Spawn, registry: CollectorRegistry | None = None,
                         embedder: Embedder | None = None) -> CacheAdapter:
    """A not-yet-started adapter; call ``await adapter.start()`` / ``aclose()`` around use."""
    if cfg.cache is None:
        raise ValueError("no cache section configured")
    runtime = build_cache(cfg.cache, registry or CollectorRegistry(), cfg.redis_url, embedder)
    return CacheAdapter(runtime, spawn)


def install(app: web.Application, cfg: GatewayConfig, embedder: Embedder | None = None) -> CacheAdapter:
    # With metrics on, the cache's own metrics (lookups by kind, latency, evictions, false hits)
    # go on the registry /metrics serves; otherwise a private one keeps them inspectable.
    registry = app[RECORDER].families.registry if RECORDER in app else CollectorRegistry()
    app[CACHE_REGISTRY] = registry

    def spawn(coro: Coroutine[Any, Any, Any]) -> None:
        app[TASKS].spawn(coro, name="cache-write")

    adapter = build_response_cache(cfg, spawn, registry, embedder)
    app[RESPONSE_CACHE] = adapter

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await adapter.start()
        try:
            yield
        finally:
            await adapter.aclose()

    app.cleanup_ctx.append(lifetime)
    app[CONFIG_LISTENERS].append(adapter.apply_config)
    app.add_subapp("/v1/cache/", build_cache_admin_routes(adapter.cache))
    return adapter


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    return data


def _opt_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string", param=name)
    return value


def build_cache_admin_routes(cache: TurnoutCache) -> web.Application:
    """POST /invalidate {model?, key?} -> {"removed": n}; POST /feedback {key, correct} ->
    {"found": bool}. Both act on the calling tenant's entries only."""

    async def invalidate(request: web.Request) -> web.Response:
        data = await _json(request)
        removed = await cache.invalidate(principal_of(request).tenant, _opt_str(data, "model"),
                                         _opt_str(data, "key"))
        return web.json_response({"removed": removed}, dumps=lambda v: orjson.dumps(v).decode())

    async def feedback(request: web.Request) -> web.Response:
        data = await _json(request)
        key = _opt_str(data, "key")
        correct = data.get("correct", False)
        if key is None or not isinstance(correct, bool):
            raise InvalidRequest("expected {\"key\": str, \"correct\": bool}", param="key")
        found = await cache.feedback(principal_of(request).tenant, key, correct)
        return web.json_response({"found": found}, dumps=lambda v: orjson.dumps(v).decode())

    sub = web.Application()
    sub.router.add_post("/invalidate", invalidate)
    sub.router.add_post("/feedback", feedback)
    return sub
