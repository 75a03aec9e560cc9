"""The cache section: what a reload may change in place."""

from __future__ import annotations

from configs import load_text
from configs.cache import CacheConfig

BASE = """
backends: {sim: {kind: mock, model: m}}
models: {chat: {deployments: [sim]}}
cache:
  store: memory
  max_bytes: 1MiB
  exact: {ttl: 1m}
  semantic: {threshold: 0.9, ttl: 1m, min_similarity: 0.7, lookup_batch: 8}
"""


def cache_of(text: str) -> CacheConfig:
    cfg = load_text(text).cache
    assert cfg is not None
    return cfg


def test_a_reload_takes_policies_and_keeps_what_built_the_cache() -> None:
    old = cache_of(BASE)
    new = cache_of(BASE.replace("1MiB", "2MiB").replace("exact: {ttl: 1m}", "exact: {ttl: 5m}")
                   .replace("threshold: 0.9, ttl: 1m, min_similarity: 0.7, lookup_batch: 8",
                            "threshold: 0.8, ttl: 2m, min_similarity: 0.6, lookup_batch: 4")
                   + "  routes: {chat: {semantic: false}}\n")
    merged = old.with_policies_of(new)
    assert (merged.exact_ttl, merged.semantic.threshold, merged.semantic.ttl) == (300, 0.8, 120)
    assert not merged.route("chat").semantic
    assert (merged.max_bytes, merged.semantic.min_similarity, merged.semantic.lookup_batch) == (1 << 20, 0.7, 8)
    assert old.with_policies_of(old) == old


def test_a_reload_without_the_semantic_section_turns_matching_off_and_keeps_its_settings() -> None:
    old = cache_of(BASE)
    merged = old.with_policies_of(cache_of(BASE.replace(
        "  semantic: {threshold: 0.9, ttl: 1m, min_similarity: 0.7, lookup_batch: 8}\n", "")))
    assert not merged.semantic_enabled
    assert merged.semantic == old.semantic  # not the defaults (threshold 0.834, ttl 1h)
    assert merged.with_policies_of(old) == old  # and a later reload turns it back on
