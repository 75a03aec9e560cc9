"""Per-deployment statistics: the latency quantile a hedge delay is set from."""

from __future__ import annotations

from routing.cluster import SAMPLES, DeploymentStats


def stats_with(samples: list[float]) -> DeploymentStats:
    stats = DeploymentStats()
    for s in samples:
        stats.successes += 1
        stats.observe_latency(s)
    return stats


def test_a_high_quantile_waits_for_samples_that_can_show_it() -> None:
    fast = [0.01] * 50
    # 50 fast samples say nothing about a p99: the caller keeps its fallback (max_delay) ...
    assert stats_with(fast).quantile(0.99, 20) is None
    # ... while p50 and p90 are estimable from them (min_samples, and 2 / (1 - q) = 20).
    assert stats_with(fast).quantile(0.5, 20) == 0.01
    assert stats_with(fast).quantile(0.9, 20) == 0.01
    tail = [0.01] * 190 + [2.0] * 10  # 200 samples, a 5% tail
    assert stats_with(tail).quantile(0.99, 20) == 2.0
    # beyond what SAMPLES can show (p99.9 needs 2,000), the full window is enough
    assert stats_with([0.01] * (SAMPLES - 1)).quantile(0.999, 20) is None
    assert stats_with([0.01] * SAMPLES).quantile(0.999, 20) == 0.01
