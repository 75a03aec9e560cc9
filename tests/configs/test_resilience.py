"""The per-model resilience section: defaults, overrides, fallback rules, errors naming the key."""

from __future__ import annotations

import pytest

from configs import load_text
from configs.errors import ConfigError
from configs.resilience import DEFAULT_RESILIENCE, FallbackRule, HedgePolicy

BASE = """
backends:
  a: {kind: mock}
models:
  big: {deployments: [a]}
  other: {deployments: [a]}
  m:
    deployments: [a]
"""


def test_defaults_live_in_one_place() -> None:
    cfg = load_text(BASE)
    assert cfg.models["m"].resilience == DEFAULT_RESILIENCE
    assert DEFAULT_RESILIENCE.hedge is None and DEFAULT_RESILIENCE.health is None


def test_overrides_and_fallback_rules() -> None:
    cfg = load_text(BASE + """
    retry: {backoff: 10ms, budget: 0.1}
    breaker: {failures: 2, reset: 3s}
    outlier: false
    health: {interval: 2s}
    hedge: {after: 150ms, budget: 0.05}
    load: {interval: 500ms}
    affinity: {table_size: 50}
    fallbacks: [other, {model: big, on: [context_length, 5xx, 429]}]
""")
    r = cfg.models["m"].resilience
    assert (r.retry.backoff, r.retry.budget, r.retry.backoff_max) == (0.01, 0.1, 1.0)
    assert (r.breaker.failures, r.breaker.reset) == (2, 3.0)
    assert r.outlier is None and r.health is not None and r.health.interval == 2.0
    assert r.hedge == HedgePolicy(delay=0.15, budget=0.05)
    assert r.load.interval == 0.5 and r.affinity.table_size == 50
    rule = FallbackRule("big", frozenset({"context_length", "server", "rate_limit"}))
    assert r.fallbacks == (FallbackRule("other"), rule)
    assert cfg.models["m"].fallbacks == ("other", "big")
    assert r.fallbacks[0].matches("timeout") and not r.fallbacks[1].matches("timeout")


def test_hedge_after_p95_is_the_default() -> None:
    cfg = load_text(BASE + "    hedge: {}\n")
    assert cfg.models["m"].resilience.hedge == HedgePolicy(delay=None)
    cfg = load_text(BASE + "    hedge: {after: p99}\n")
    assert cfg.models["m"].resilience.hedge == HedgePolicy(delay=None, quantile=0.99)


@pytest.mark.parametrize(("snippet", "path"), [
    ("    breaker: {failures: 0}\n", "models.m.breaker.failures"),
    ("    hedge: {after: soon}\n", "models.m.hedge.after"),
    ("    retry: {budgett: 0.1}\n", "models.m.retry.budgett"),
    ("    fallbacks: [{model: big, on: [oops]}]\n", "models.m.fallbacks[0].on"),
    ("    fallbacks: [nope]\n", "models.m.fallbacks[0]"),
])
def test_errors_name_the_key(snippet: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(BASE + snippet)
    assert path in str(info.value)
