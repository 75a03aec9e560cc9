"""The response cache as one object: exact first, then semantic; controls; invalidation;
feedback. Knows nothing of HTTP: the gateway adapter translates to and from it.

Contracts:
- Scope: every key starts with ``{tenant}|{model}|``; no lookup ever searches another
  tenant's keys or index scope.
- Exact lookups only for deterministic requests (temperature 0 or a seed) unless the route
  sets ``nondeterministic``; semantic lookups only for single-turn user questions.
- ``put`` refuses answers that are errors, truncated (finish_reason "length"/"content_filter")
  or call tools (unless the route sets ``tool_calls``); returns which kinds were written.
- ``feedback(key, correct=False)`` counts a false hit and evicts the entry everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from cache.keys import RequestKey, request_key, tenant_prefix
from cache.metrics import CacheMetrics
from cache.semantic import SemanticCache
from cache.stores import Store
from configs.cache import CacheConfig, RouteCacheConfig

BYPASS, REFRESH, NO_STORE = "bypass", "refresh", "no-store"
_BAD_FINISH = frozenset({"length", "content_filter"})


@dataclass(frozen=True, slots=True)
class Hit:
    body: dict[str, Any]
    kind: str  # "exact" | "semantic"
    key: str


def cacheable_answer(answer: Mapping[str, Any], allow_tool_calls: bool) -> bool:
    choices = answer.get("choices")
    if "error" in answer or not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, Mapping) or choice.get("finish_reason") in _BAD_FINISH:
            return False
        if choice.get("finish_reason") is None:
            return False
        message = choice.get("message") or {}
        if not allow_tool_calls and (message.get("tool_calls") or message.get("function_call")
                                     or choice.get("finish_reason") == "tool_calls"):
            return False
    return True


class TurnoutCache:
    def __init__(self, cfg: CacheConfig, store: Store, metrics: CacheMetrics,
                 semantic: SemanticCache | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.semantic = semantic
        # Children of the per-lookup series, bound once: ``labels()`` costs ~1 µs a call.
        self._exact_seconds = metrics.lookup_seconds.labels("exact")
        self._exact_results = (metrics.lookups.labels("exact", "hit"), metrics.lookups.labels("exact", "miss"))

    def _exact_allowed(self, key: RequestKey, route: RouteCacheConfig) -> bool:
        return route.exact and (key.deterministic or route.nondeterministic)

    def _semantic_allowed(self, cfg: CacheConfig, key: RequestKey, route: RouteCacheConfig) -> bool:
        return (self.semantic is not None and cfg.semantic_enabled and route.semantic
                and key.semantic_text is not None and (key.deterministic or route.nondeterministic)
                and not key.has_tools)

    async def lookup(self, tenant: str, model: str, body: Mapping[str, Any],
                     control: frozenset[str] = frozenset(), key: RequestKey | None = None) -> Hit | None:
        """``key``: ``request_key(tenant, model, body)`` when the caller already has it. ``cfg``
        is read once: a reload in between (``cfg`` swapped) never mixes two policies in one call."""
        if BYPASS in control or REFRESH in control:
            self.metrics.lookups.labels("exact", "skipped").inc()
            return None
        cfg = self.cfg
        key = key or request_key(tenant, model, body)
        route = cfg.route(model)
        if self._exact_allowed(key, route):
            hit = await self._lookup_exact(key)
            if hit is not None:
                return hit
        if self._semantic_allowed(cfg, key, route):
            threshold = route.threshold if route.threshold is not None else cfg.semantic.threshold
            return await self._lookup_semantic(key, threshold)
        return None

    async def _lookup_exact(self, key: RequestKey) -> Hit | None:
        start = time.perf_counter()
        raw = await self.store.get(key.exact)
        self._exact_seconds.observe(time.perf_counter() - start)
        self._exact_results[raw is None].inc()  # (hit, miss)
        return None if raw is None else Hit(orjson.loads(raw), "exact", key.exact)

    async def _lookup_semantic(self, key: RequestKey, threshold: float) -> Hit | None:
        assert self.semantic is not None and key.semantic_text is not None
        start = time.perf_counter()
        found = await self.semantic.lookup(key.scope, key.semantic_text, threshold)
        self.metrics.lookup_seconds.labels("semantic").observe(time.perf_counter() - start)
        self.metrics.lookups.labels("semantic", "miss" if found is None else "hit").inc()
        if found is None:
            return None
        return Hit(orjson.loads(found[1]), "semantic", found[0])

    async def put(self, tenant: str, model: str, body: Mapping[str, Any], answer: Mapping[str, Any],
                  control: frozenset[str] = frozenset(), key: RequestKey | None = None) -> tuple[str, ...]:
        if BYPASS in control or NO_STORE in control:
            return ()
        cfg = self.cfg  # read once, as in lookup; a write after a reload follows the new policy
        route = cfg.route(model)
        if not cacheable_answer(answer, route.tool_calls):
            return ()
        key = key or request_key(tenant, model, body)
        raw = orjson.dumps(answer)
        written: list[str] = []
        if self._exact_allowed(key, route):
            await self.store.set(key.exact, raw, route.ttl or cfg.exact_ttl)
            written.append("exact")
        if self._semantic_allowed(cfg, key, route):
            assert self.semantic is not None and key.semantic_text is not None
            ttl = route.semantic_ttl or cfg.semantic.ttl
            await self.semantic.put(key.scope, key.semantic_text, raw, ttl)
            written.append("semantic")
        for kind in written:
            self.metrics.stores.labels(kind).inc()
        return tuple(written)

    async def invalidate(self, tenant: str, model: str | None = None, key: str | None = None) -> int:
        """Remove one key (which must belong to ``tenant``) or everything of a tenant/model."""
        prefix = tenant_prefix(tenant, model)
        if key is not None:
            if not key.startswith(prefix):
                return 0
            return int(await self._remove_key(key, "invalidate"))
        count = await self.store.delete_prefix(prefix)
        if self.semantic is not None:
            removed = await self.semantic.remove_prefix(prefix)
            self.metrics.evictions.labels("semantic", "invalidate").inc(removed)
        return count

    async def feedback(self, tenant: str, key: str, correct: bool) -> bool:
        """Report whether a served hit was right; a wrong one is evicted. False: unknown key."""
        if not key.startswith(tenant_prefix(tenant)):
            return False
        if correct:
            return True
        kind = "semantic" if "|s|" in key else "exact"
        self.metrics.false_hits.labels(kind).inc()
        return await self._remove_key(key, "feedback")

    async def _remove_key(self, key: str, reason: str) -> bool:
        kind = "semantic" if "|s|" in key else "exact"
        found = await (self.semantic.remove(key) if self.semantic is not None and kind == "semantic"
                       else self.store.delete(key))
        if found:
            self.metrics.evictions.labels(kind, reason).inc()
        return found
