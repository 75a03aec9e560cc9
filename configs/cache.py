"""The ``cache:`` section. Owned by the cache layer; parsed strictly like every section.

```yaml
cache:
  store: memory                  # memory | redis (needs the top-level redis.url)
  namespace: "turnout:cache:"    # Redis key prefix
  max_bytes: 256MiB              # memory store bound (LRU)
  exact: {ttl: 1h}
  semantic:                      # present = enabled
    threshold: 0.834             # verifier probability needed to serve a semantic hit
    min_similarity: 0.75         # cosine needed to be a candidate at all
    ttl: 1h
    max_entries: 100000          # index bound across all scopes (LRU eviction)
    embedder: static             # static (distilled all-MiniLM-L6-v2, fast) | minilm
    verifier: true               # second stage on/off
    max_batch: 64                # texts per embedding step (puts)
    lookup_batch: 16             # lookups per worker step (embed + search + verifier)
    verifier_memo: 8192          # cached questions kept prepared for the verifier (~20-27 KB each)
  routes:                        # per model alias; every key optional
    llama-8b: {exact: true, semantic: false, threshold: 0.6, ttl: 10m,
               nondeterministic: false, tool_calls: false}
```

A reload (SIGHUP) applies the per-request policies (``CacheConfig.with_policies_of``): the
exact TTL, semantic matching on or off, its threshold and TTL, and ``routes``. The rest builds
the store, the index and its models once, at startup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from configs.reader import Reader

# The verifier's default operating point: the threshold stored in cache/verifier_model.npz
# (lowest with pooled out-of-fold precision >= 0.91 on the QQP dev pairs); a cache test keeps them equal.
DEFAULT_THRESHOLD = 0.834


@dataclass(frozen=True, slots=True)
class SemanticConfig:
    threshold: float = DEFAULT_THRESHOLD
    min_similarity: float = 0.75
    ttl: float = 3600.0
    max_entries: int = 100_000
    embedder: str = "static"
    verifier: bool = True
    max_batch: int = 64
    lookup_batch: int = 16
    verifier_memo: int = 8192


@dataclass(frozen=True, slots=True)
class RouteCacheConfig:
    """Overrides for one model alias; None means "as the section says"."""

    exact: bool = True
    semantic: bool = True
    threshold: float | None = None
    ttl: float | None = None
    semantic_ttl: float | None = None
    nondeterministic: bool = False  # cache sampled (temperature > 0, no seed) answers too
    tool_calls: bool = False  # cache answers that call tools


@dataclass(frozen=True, slots=True)
class CacheConfig:
    store: str = "memory"
    exact_ttl: float = 3600.0
    semantic_enabled: bool = False
    namespace: str = "turnout:cache:"
    max_bytes: int = 256 * 1024 * 1024
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    routes: Mapping[str, RouteCacheConfig] = field(default_factory=dict)

    def route(self, model: str) -> RouteCacheConfig:
        return self.routes.get(model, _DEFAULT_ROUTE)

    def with_policies_of(self, new: CacheConfig) -> CacheConfig:
        """This config with ``new``'s per-request policies: what each lookup and write reads
        (TTLs, thresholds, route overrides, semantic matching on or off), as opposed to what
        built the store and the index. Without a ``semantic`` section ``new`` turns semantic
        matching off (its threshold and TTL are then defaults, not choices: the old ones stay).
        Turning it on serves nothing unless the index was built at startup."""
        semantic = self.semantic
        if new.semantic_enabled:
            semantic = dataclasses.replace(semantic, threshold=new.semantic.threshold, ttl=new.semantic.ttl)
        return dataclasses.replace(self, exact_ttl=new.exact_ttl, semantic_enabled=new.semantic_enabled,
                                   semantic=semantic, routes=new.routes)


_DEFAULT_ROUTE = RouteCacheConfig()


def _parse_semantic(s: Reader) -> SemanticConfig:
    cfg = SemanticConfig(
        threshold=s.float("threshold", DEFAULT_THRESHOLD, min_value=0, max_value=1),
        min_similarity=s.float("min_similarity", 0.75, min_value=-1, max_value=1),
        ttl=s.duration("ttl", 3600.0),
        max_entries=s.int("max_entries", 100_000, min_value=1),
        embedder=s.choice("embedder", ("static", "minilm"), "static"),
        verifier=s.bool("verifier", True),
        max_batch=s.int("max_batch", 64, min_value=1),
        lookup_batch=s.int("lookup_batch", 16, min_value=1),
        verifier_memo=s.int("verifier_memo", 8192, min_value=1),
    )
    s.finish()
    return cfg


def _parse_route(r: Reader) -> RouteCacheConfig:
    cfg = RouteCacheConfig(
        exact=r.bool("exact", True), semantic=r.bool("semantic", True),
        threshold=r.float("threshold", None, min_value=0, max_value=1),
        ttl=r.duration("ttl", None), semantic_ttl=r.duration("semantic_ttl", None),
        nondeterministic=r.bool("nondeterministic", False), tool_calls=r.bool("tool_calls", False),
    )
    r.finish()
    return cfg


def parse_cache(r: Reader | None) -> CacheConfig | None:
    if r is None:
        return None
    store = r.choice("store", ("memory", "redis"), "memory")
    namespace = r.str("namespace", "turnout:cache:")
    max_bytes = r.size("max_bytes", 256 * 1024 * 1024)
    exact = r.section("exact")
    exact_ttl = 3600.0
    if exact is not None:
        exact_ttl = exact.duration("ttl", 3600.0)
        exact.finish()
    sem_reader = r.section("semantic")
    semantic = _parse_semantic(sem_reader) if sem_reader is not None else SemanticConfig()
    routes_reader = r.section("routes")
    routes: dict[str, RouteCacheConfig] = {}
    if routes_reader is not None:
        for alias in list(routes_reader.keys()):
            sub = routes_reader.section(alias, required=True)
            assert sub is not None
            routes[alias] = _parse_route(sub)
        routes_reader.finish()
    r.finish()
    return CacheConfig(
        store=store, exact_ttl=exact_ttl, semantic_enabled=sem_reader is not None, namespace=namespace,
        max_bytes=max_bytes, semantic=semantic, routes=routes,
    )
