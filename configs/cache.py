"""The ``cache:`` section. Owned by the cache layer; parsed strictly like every section."""

from __future__ import annotations

from dataclasses import dataclass

from configs.reader import Reader


@dataclass(frozen=True, slots=True)
class CacheConfig:
    store: str = "memory"
    exact_ttl: float = 3600.0
    semantic_enabled: bool = False
    semantic_threshold: float = 0.9
    semantic_ttl: float = 3600.0


def parse_cache(r: Reader | None) -> CacheConfig | None:
    if r is None:
        return None
    store = r.choice("store", ("memory", "redis"), "memory")
    exact = r.section("exact")
    exact_ttl = 3600.0
    if exact is not None:
        exact_ttl = exact.duration("ttl", 3600.0)
        exact.finish()
    semantic = r.section("semantic")
    cfg = CacheConfig(store=store, exact_ttl=exact_ttl)
    if semantic is not None:
        cfg = CacheConfig(
            store=store, exact_ttl=exact_ttl, semantic_enabled=True,
            semantic_threshold=semantic.float("threshold", 0.9, min_value=0, max_value=1),
            semantic_ttl=semantic.duration("ttl", 3600.0),
        )
        semantic.finish()
    r.finish()
    return cfg
