"""Exact and semantic response cache, scoped by tenant, shareable through Redis.

Public surface: the ``TurnoutCache`` facade, its ``Hit`` value, the stores, metrics and the
builders of the semantic layer. See docs/cache.md for the design and measured numbers.
"""

from cache.metrics import CacheMetrics
from cache.service import Hit, TurnoutCache, cacheable_answer
from cache.stores import MemoryStore, RedisStore, Store

__all__ = ["CacheMetrics", "Hit", "MemoryStore", "RedisStore", "Store", "TurnoutCache", "cacheable_answer"]
