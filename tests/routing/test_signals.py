"""Load parsing and polling, outlier ejection, probes, budgets and sliding windows."""

from __future__ import annotations

import asyncio
import random

from configs.resilience import LoadPolicy, OutlierPolicy, ProbePolicy, RetryPolicy
from routing import ClusterState
from routing.health import Outlier, ProbeResults, probe_once
from routing.load import LoadSample, metrics_url, parse_vllm_metrics, poll_once
from routing.retry_budget import RetryBudget
from routing.windows import WindowCounter

METRICS = """# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m",engine="0"} 3.0
vllm:num_requests_running{model_name="m",engine="1"} 2.0
vllm:num_requests_waiting{model_name="m"} 7.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.42
vllm:prompt_tokens_total{model_name="m"} 100.0
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_vllm_metrics() -> None:
    sample = parse_vllm_metrics(METRICS, 5.0)
    assert sample == LoadSample(waiting=7.0, running=5.0, kv_cache_usage=0.42, at=5.0)
    assert parse_vllm_metrics("vllm:num_requests_waiting 1\n", 0.0) == LoadSample(1.0, 0.0, None, 0.0)
    assert parse_vllm_metrics("process_cpu_seconds_total 3\n", 0.0) is None
    assert metrics_url("http://h:8000/v1") == "http://h:8000/metrics"


async def test_poll_once_and_staleness() -> None:
    async def fetch(url: str) -> str:
        if "down" in url:
            raise ConnectionError("refused")
        if "slow" in url:
            await asyncio.sleep(5)
        return METRICS

    cluster = ClusterState(["up", "down", "slow"], load=LoadPolicy(stale=0.2))
    await poll_once({"up": "http://up/metrics", "down": "http://down/metrics", "slow": "http://slow/metrics"},
                    fetch, cluster.loads, 0.05)
    assert set(cluster.loads) == {"up"}
    assert cluster.view(["up"]).state("up").waiting == 7.0
    await asyncio.sleep(0.25)
    assert cluster.view(["up"]).state("up").waiting is None  # stale: ignored


def is_ejected(out: Outlier) -> bool:
    return out.ejected


def test_outlier_ejects_on_error_rate_and_returns() -> None:
    clock = Clock()
    out = Outlier(OutlierPolicy(window=10, min_requests=10, error_rate=0.5, eject=5), clock)
    for i in range(9):
        out.record(i % 3 != 0)
    assert not is_ejected(out)  # 3/9 errors, under the minimum count anyway
    for _ in range(5):
        out.record(False)
    assert is_ejected(out) and out.ejections == 1
    clock.now += 5.1
    assert not is_ejected(out)


def test_cluster_view_respects_outlier() -> None:
    cluster = ClusterState(["a"], outliers={"a": OutlierPolicy(min_requests=4, error_rate=0.5)})
    for _ in range(4):
        cluster.record("a", RuntimeError("x"), 0.1)
    assert not cluster.view(["a"]).state("a").available
    assert cluster.status()["a"]["outlier_ejected"] is True


async def test_probe_once() -> None:
    results = ProbeResults()

    async def check(name: str) -> bool:
        if name == "hang":
            await asyncio.sleep(5)
        if name == "broken":
            raise RuntimeError("bug")
        return name == "ok"

    await probe_once(["ok", "bad", "hang", "broken"], check, ProbePolicy(timeout=0.05), results)
    assert [results.healthy(n) for n in ("ok", "bad", "hang", "broken", "never")] == [True, False, False, False, True]


def test_window_counter_slides() -> None:
    clock = Clock()
    w = WindowCounter(10.0, clock=clock)
    w.add(5)
    clock.now += 5
    w.add(2)
    assert w.total() == 7
    clock.now += 5.5
    assert w.total() == 2
    clock.now += 100
    assert w.total() == 0


def test_retry_budget_ratio_and_floor() -> None:
    clock = Clock()
    budget = RetryBudget(RetryPolicy(budget=0.2, min_retries=2, window=10), clock)
    assert budget.try_spend() and budget.try_spend() and not budget.try_spend()
    for _ in range(100):
        budget.request()
    spent = sum(budget.try_spend() for _ in range(100))
    assert spent == 20 - 2
    clock.now += 11
    assert budget.try_spend()


def test_backoff_full_jitter_bounds() -> None:
    budget = RetryBudget(RetryPolicy(backoff=0.1, backoff_max=0.5), rng=random.Random(3))
    for n in range(8):
        values = [budget.backoff(n) for _ in range(200)]
        assert 0 <= min(values) and max(values) <= min(0.5, 0.1 * 2**n)
    assert max(budget.backoff(10) for _ in range(200)) > 0.4
