"""Prometheus metrics of the cache, registered on a registry the caller passes in (never the
global default, so every test and every app instance has its own)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True, slots=True)
class CacheMetrics:
    lookups: Counter  # labels: kind (exact|semantic), result (hit|miss|rejected|skipped)
    lookup_seconds: Histogram  # labels: kind
    stores: Counter  # labels: kind
    evictions: Counter  # labels: kind, reason (lru|index_bound|feedback|invalidate)
    false_hits: Counter  # labels: kind

    @classmethod
    def create(cls, registry: CollectorRegistry) -> CacheMetrics:
        return cls(
            lookups=Counter("turnout_cache_lookups_total", "Cache lookups by kind and result",
                            ["kind", "result"], registry=registry),
            lookup_seconds=Histogram("turnout_cache_lookup_seconds", "Cache lookup latency",
                                     ["kind"], buckets=_LATENCY_BUCKETS, registry=registry),
            stores=Counter("turnout_cache_stores_total", "Answers written to the cache", ["kind"],
                           registry=registry),
            evictions=Counter("turnout_cache_evictions_total", "Entries evicted", ["kind", "reason"],
                              registry=registry),
            false_hits=Counter("turnout_cache_false_hits_total", "Hits reported wrong via feedback",
                               ["kind"], registry=registry),
        )
