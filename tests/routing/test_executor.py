"""Executor: retries, budget, breakers, fallback rules by error class, deadline, hedging."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from configs import load_text
from configs.schema import GatewayConfig
from routing import AllAttemptsFailed, ClusterState, ErrorClass, Executor, build_router, is_deployment_fault


class Boom(Exception):
    def __init__(self, kind: ErrorClass) -> None:
        super().__init__(kind)
        self.kind = kind


def classify(exc: BaseException) -> ErrorClass:
    return exc.kind if isinstance(exc, Boom) else "server"


YAML = """
backends:
  a: {kind: mock}
  b: {kind: mock}
  c: {kind: mock}
models:
  m:
    deployments: [a, b]
    retries: 2
    retry: {backoff: 1ms, backoff_max: 2ms, min_retries: 3, budget: 0.0}
    breaker: {failures: 3, reset: 100ms}
    outlier: false
    fallbacks: [{model: big, on: [context_length]}, {model: other, on: [5xx, timeout]}]
  big: {deployments: [c], outlier: false}
  other: {deployments: [c], outlier: false}
  h:
    deployments: [a, b]
    hedge: {after: 20ms, budget: 0.5}
    outlier: false
"""


def build(yaml: str = YAML) -> tuple[GatewayConfig, Executor, ClusterState]:
    cfg = load_text(yaml)
    policy = cfg.models["m"].resilience.breaker
    cluster = ClusterState(cfg.backends, breakers=dict.fromkeys(cfg.backends, policy),
                           is_failure=is_deployment_fault(classify))
    routers = {n: build_router(m.balance, m.resilience) for n, m in cfg.models.items()}
    return cfg, Executor(cfg.models, routers, cluster, classify), cluster


async def test_retry_moves_to_next_deployment() -> None:
    _, ex, _ = build()
    calls: list[str] = []

    async def attempt(model: str, dep: str) -> str:
        calls.append(dep)
        if dep == "a":
            raise Boom("server")
        return dep

    done = await ex.run("m", attempt)
    assert done.deployment == "b" and done.attempts == len(calls) and not done.fallback_used


async def test_fallback_by_error_class() -> None:
    _, ex, _ = build()

    async def ctx_len(model: str, dep: str) -> str:
        if model == "m":
            raise Boom("context_length")
        return model

    done = await ex.run("m", ctx_len)
    assert done.model == "big" and done.fallback_used and len(done.errors) == 1  # no retry on m

    async def server(model: str, dep: str) -> str:
        if model == "m":
            raise Boom("server")
        return model

    done = await ex.run("m", server)
    assert done.model == "other"  # the context_length rule is skipped for a 5xx


async def test_rate_limit_matches_no_rule_and_fails() -> None:
    _, ex, _ = build()

    async def limited(model: str, dep: str) -> str:
        raise Boom("rate_limit")

    with pytest.raises(AllAttemptsFailed) as info:
        await ex.run("m", limited)
    assert {e.kind for e in info.value.errors if isinstance(e, Boom)} == {"rate_limit"}


@pytest.mark.parametrize("kind", ["client", "deadline"])
async def test_client_error_and_deadline_stop_the_chain(kind: ErrorClass) -> None:
    _, ex, _ = build()
    calls = Counter[str]()

    async def attempt(model: str, dep: str) -> str:
        calls[model] += 1
        raise Boom(kind)

    with pytest.raises(AllAttemptsFailed):
        await ex.run("m", attempt)
    assert calls == {"m": 1}


async def test_retry_budget_caps_retries() -> None:
    _, ex, _ = build(YAML.replace("failures: 3", "failures: 100"))
    calls = Counter[str]()

    async def attempt(model: str, dep: str) -> str:
        calls[model] += 1
        raise Boom("timeout")

    for _ in range(6):
        with pytest.raises(AllAttemptsFailed):
            await ex.run("m", attempt)
    # budget 0 % with a floor of 3 retries per window: 6 first attempts + 3 retries on m
    assert calls["m"] == 6 + 3


async def test_deadline_bounds_backoff() -> None:
    _, ex, _ = build()

    async def attempt(model: str, dep: str) -> str:
        raise Boom("server")

    loop = asyncio.get_running_loop()
    with pytest.raises(AllAttemptsFailed):
        await ex.run("m", attempt, deadline=loop.time() - 1)


async def test_breaker_opens_skips_and_recovers() -> None:
    _, ex, cluster = build()
    broken = {"a"}

    async def attempt(model: str, dep: str) -> str:
        await asyncio.sleep(0)
        if dep in broken:
            raise Boom("server")
        return dep

    for _ in range(8):
        await ex.run("m", attempt)
    assert cluster.breakers.state("a") == "open"
    assert not cluster.available("a")
    used = Counter([(await ex.run("m", attempt)).deployment for _ in range(20)])
    assert used == {"b": 20}
    broken.clear()
    await asyncio.sleep(0.12)
    assert cluster.available("a")  # reset elapsed: one probe may go
    used = Counter([(await ex.run("m", attempt)).deployment for _ in range(20)])
    assert used["a"] >= 8 and cluster.breakers.state("a") == "closed"


async def test_client_errors_do_not_open_breaker() -> None:
    _, ex, cluster = build()

    async def attempt(model: str, dep: str) -> str:
        raise Boom("client")

    for _ in range(10):
        with pytest.raises(AllAttemptsFailed):
            await ex.run("m", attempt)
    assert cluster.breakers.states() == {"a": "closed", "b": "closed", "c": "closed"}


async def test_half_open_lets_one_probe_through() -> None:
    _, ex, cluster = build()
    for _ in range(3):
        with pytest.raises(Boom), cluster.breakers.guard("a"):
            raise Boom("server")
    assert cluster.breakers.state("a") == "open"
    await asyncio.sleep(0.12)
    gate = asyncio.Event()

    async def slow_probe() -> None:
        with cluster.breakers.guard("a"):
            await gate.wait()

    task = asyncio.get_running_loop().create_task(slow_probe())
    await asyncio.sleep(0.01)
    assert not cluster.available("a")  # the probe is running: nobody else
    gate.set()
    await task
    assert cluster.breakers.state("a") == "closed" and cluster.available("a")


async def test_cancellation_is_not_a_failure() -> None:
    _, ex, cluster = build()

    async def hang(model: str, dep: str) -> str:
        await asyncio.sleep(10)
        return dep

    for _ in range(5):
        task = asyncio.get_running_loop().create_task(ex.run("m", hang))
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cluster.breakers.states()["a"] == "closed"
    assert cluster.get("a").in_flight == 0 and cluster.get("a").failures == 0


async def test_hedge_wins_and_loser_is_cancelled_and_discarded() -> None:
    _, ex, cluster = build()
    cancelled: list[str] = []
    discarded: list[object] = []

    async def attempt(model: str, dep: str) -> str:
        try:
            await asyncio.sleep(1.0 if dep == "a" else 0.005)
        except asyncio.CancelledError:
            cancelled.append(dep)
            raise
        return dep

    async def discard(value: object) -> None:
        discarded.append(value)

    results = [await ex.run("h", attempt, discard=discard) for _ in range(4)]
    hedged = [r for r in results if r.hedge is not None]
    assert hedged and all(r.hedge == "won" and r.deployment == "b" for r in hedged if r.attempts == 2)
    assert "a" in cancelled
    assert cluster.get("a").in_flight == 0 and cluster.get("b").in_flight == 0


async def test_hedge_budget_caps_duplicates() -> None:
    _, ex, _ = build()
    calls = Counter[str]()

    async def attempt(model: str, dep: str) -> str:
        calls["total"] += 1
        await asyncio.sleep(0.03 if dep == "a" else 0.001)
        return dep

    results = [await ex.run("h", attempt) for _ in range(40)]
    hedges = sum(r.hedge is not None for r in results)
    assert 0 < hedges <= 0.5 * 40 + 1
    assert calls["total"] == 40 + hedges


async def test_hedge_race_discards_a_late_second_value() -> None:
    from routing.hedging import race

    discarded: list[str] = []

    async def disc(v: object) -> None:
        discarded.append(str(v))

    async def first() -> str:
        await asyncio.sleep(0.02)
        return "first"

    async def second() -> str:
        await asyncio.sleep(0.02)
        return "second"

    result = await race(first, second, 0.0, lambda: True, disc, lambda e: None)
    assert result.hedged and result.value in ("first", "second")
    assert discarded in ([], ["first"], ["second"]) and result.value not in discarded


async def test_a_hedged_tail_stays_in_the_hedge_delay() -> None:
    """The primaries that lose their hedge race are cancelled; their elapsed time still joins
    the latency samples (a lower bound), so the p99 delay climbs out of the fast requests'
    range instead of settling on it and spending the budget on requests that were never slow."""
    _, ex, cluster = build(YAML.replace("hedge: {after: 20ms, budget: 0.5}",
                                        "hedge: {after: p99, budget: 0.5, max_delay: 200ms, min_samples: 20}"))
    served = 0

    async def attempt(model: str, dep: str) -> str:
        nonlocal served
        served += 1
        await asyncio.sleep(0.5 if served % 10 == 0 else 0.002)  # a 10% tail
        return dep

    for _ in range(60):
        await ex.run("h", attempt)
    a, b = cluster.get("a"), cluster.get("b")
    tail_samples = [s for s in [*a.samples, *b.samples] if s >= 0.02]
    assert tail_samples  # lost races were recorded, at their elapsed time
    ordered = sorted(a.samples)  # the p99 the delay will use once there are enough samples
    assert ordered[int(0.99 * len(ordered))] >= 0.02  # not the fast requests' 2-3 ms
