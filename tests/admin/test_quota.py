"""QuotaStore semantics, identical for MemoryQuota and RedisQuota (real Redis)."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable

import orjson
import pytest
import redis.asyncio as aioredis

from admin.models import Limits
from admin.quota import AdmitRequest, QuotaStore, Scope
from admin.quota_memory import BUCKETS_PER_S, MemoryQuota
from admin.quota_redis import RedisQuota
from tests.admin.conftest import REDIS_URL

NANO = 1_000_000_000
T0 = 1_750_000_000.0  # a fixed clock, mid-month


async def no_spend(scope: Scope, since: float) -> int:
    return 0


MakeQuota = Callable[..., QuotaStore]


@pytest.fixture(params=["memory", "redis"])
def make_quota(request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_prefix: str) -> MakeQuota:
    def make(loader: object = no_spend, lease: float = 600.0) -> QuotaStore:
        if request.param == "memory":
            return MemoryQuota(loader, lease)  # type: ignore[arg-type]
        return RedisQuota(redis_client, redis_prefix, loader, lease, server_time=False)  # type: ignore[arg-type]

    return make


def req(i: int, *scopes: Scope, now: float = T0, tokens: int = 1, cost: int = 0) -> AdmitRequest:
    return AdmitRequest(f"r{i}", scopes, tokens, cost, now)


async def test_rpm_is_a_sliding_window(make_quota: MakeQuota) -> None:
    q = make_quota()
    s = Scope("k:a", Limits(rpm=3))
    for i, t in enumerate((0, 10, 20)):
        assert (await q.admit(req(i, s, now=T0 + t))).ok
    refused = await q.admit(req(9, s, now=T0 + 30))
    assert not refused.ok and refused.reason == "rpm" and refused.scope == "k:a"
    slack = 1 / BUCKETS_PER_S  # both stores count in 100 ms buckets: conservative by up to one
    assert refused.retry_after == pytest.approx(30 + slack, abs=0.01)
    assert refused.remaining == [(0, None)]
    assert (await q.admit(req(10, s, now=T0 + 60.01 + slack))).ok  # the t=0 entry left the window
    assert not (await q.admit(req(11, s, now=T0 + 65))).ok


async def test_tpm_counts_estimate_then_real_usage(make_quota: MakeQuota) -> None:
    q = make_quota()
    s = Scope("k:a", Limits(tpm=100))
    first = req(1, s, tokens=60)
    assert (await q.admit(first)).ok
    assert (await q.admit(req(2, s, tokens=50))).reason == "tpm"
    await q.finish(first, 20, 0)  # settled at 20 real tokens
    second = req(3, s, tokens=50)
    assert (await q.admit(second)).ok
    assert (await q.admit(req(5, s, tokens=31))).remaining == [(None, 30)]
    await q.finish(second, None, 0)  # released: counts nothing
    assert (await q.admit(req(4, s, tokens=80))).ok


async def test_concurrency_slots_and_leases(make_quota: MakeQuota) -> None:
    q = make_quota(lease=5.0)
    s = Scope("t:x", Limits(concurrency=2))
    a, b = req(1, s), req(2, s)
    assert (await q.admit(a)).ok and (await q.admit(b)).ok
    refused = await q.admit(req(3, s))
    assert refused.reason == "concurrency"
    await q.finish(a, 1, 0)
    assert (await q.admit(req(4, s))).ok
    # a crashed holder's lease runs out
    assert (await q.admit(req(5, s, now=T0 + 6))).ok


async def test_budget_reserve_settle_release_and_alert(make_quota: MakeQuota) -> None:
    q = make_quota()
    s = Scope("t:acme", Limits(budget_usd=1.0, soft_alert=0.5))
    held = [req(i, s, cost=NANO * 3 // 10) for i in range(3)]
    for r in held:
        assert (await q.admit(r)).ok
    refused = await q.admit(req(9, s, cost=NANO * 3 // 10))
    assert refused.reason == "budget" and refused.retry_after > 0
    assert list(await q.finish(held[0], 10, NANO // 10)) == []  # spent 0.1
    assert (await q.admit(req(10, s, cost=NANO * 3 // 10))).ok  # 0.1 + 0.9 reserved = 1.0
    await q.finish(held[1], None, 0)  # release frees 0.3
    assert list(await q.finish(held[2], 10, NANO // 2)) == ["t:acme"]  # 0.6 spent: crosses 0.5
    assert await q.budget_state(s, T0) == (NANO * 6 // 10, NANO * 3 // 10)


async def test_budget_is_seeded_once_from_the_database(make_quota: MakeQuota) -> None:
    calls: list[float] = []

    async def loader(scope: Scope, since: float) -> int:
        calls.append(since)
        return NANO * 95 // 100

    q = make_quota(loader)
    s = Scope("k:a", Limits(budget_usd=1.0, budget_period="day"))
    assert (await q.admit(req(1, s, cost=NANO // 100))).ok
    assert (await q.admit(req(2, s, cost=NANO // 10))).reason == "budget"
    assert len(calls) == 1 and calls[0] <= T0 < calls[0] + 86400


async def test_refusal_changes_nothing(make_quota: MakeQuota) -> None:
    q = make_quota()
    key, tenant = Scope("k:a", Limits(rpm=10)), Scope("t:x", Limits(rpm=1))
    assert (await q.admit(req(1, key, tenant))).ok
    refused = await q.admit(req(2, key, tenant))
    assert refused.reason == "rpm" and refused.scope == "t:x"
    assert (await q.admit(req(3, key))).ok
    refused = await q.admit(req(4, key, Scope("t:y", Limits(rpm=0))))
    assert refused.remaining == [(8, None), (0, None)]  # key scope: only r1 and r3 counted


async def test_a_later_scope_refusing_takes_back_every_counter_of_the_earlier_ones(make_quota: MakeQuota) -> None:
    q = make_quota()
    key = Scope("k:a", Limits(rpm=1, tpm=100, concurrency=1, budget_usd=1.0, budget_period="day"))
    refused = await q.admit(req(1, key, Scope("t:x", Limits(rpm=0)), tokens=60, cost=NANO * 6 // 10))
    assert refused.reason == "rpm" and refused.scope == "t:x"
    # each limit of the key scope has room for exactly one such request
    assert (await q.admit(req(2, key, tokens=60, cost=NANO * 6 // 10))).ok
    assert await q.budget_state(key, T0) == (0, NANO * 6 // 10)


async def test_budget_race_in_one_process(make_quota: MakeQuota) -> None:
    q = make_quota()
    await _budget_race([q] * 1, concurrency=200)


async def _budget_race(quotas: list[QuotaStore], concurrency: int) -> None:
    """200 concurrent requests, each reserving 0.02 USD and really costing 0.005-0.02, against
    1 USD: settled spend never exceeds the budget, and nothing is admitted once it is spent."""
    s = Scope("t:race", Limits(budget_usd=1.0))
    reserve = NANO // 50
    settled: list[int] = []

    async def one(i: int) -> None:
        q = quotas[i % len(quotas)]
        while True:
            r = req(i * 1000 + len(settled), s, cost=reserve, now=time.time())
            decision = await q.admit(r)
            if not decision.ok:
                return
            await asyncio.sleep(random.random() * 0.01)
            cost = random.randint(reserve // 4, reserve)
            await q.finish(r, 10, cost)
            settled.append(cost)

    await asyncio.gather(*(one(i) for i in range(concurrency)))
    assert sum(settled) <= NANO
    assert sum(settled) > NANO - reserve  # it stopped because the budget was spent
    state = await quotas[0].budget_state(s, time.time())
    assert state == (sum(settled), 0)


async def test_budget_race_across_redis_clients(redis_prefix: str, redis_client: aioredis.Redis) -> None:
    clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(3)]
    try:
        quotas: list[QuotaStore] = [RedisQuota(c, redis_prefix, no_spend) for c in clients]
        await _budget_race(quotas, concurrency=200)
    finally:
        for c in clients:
            await c.aclose()


async def test_rate_limit_is_global_across_processes(redis_prefix: str, redis_client: aioredis.Redis) -> None:
    """3 processes share one RPM limit (window shortened to 1 s so the test is quick): in every
    window no more than the limit is admitted, and the limit is reached (not under-admitting)."""
    limit, window, duration = 40, 1.0, 3.2
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.admin.ratelimit_worker", redis_prefix, str(limit), str(window),
            str(duration), stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    times = sorted(t for out, _ in outputs for t in orjson.loads(out))
    per_process = [len(orjson.loads(out)) for out, _ in outputs]
    assert all(n > 0 for n in per_process)
    j = 0
    for i, t in enumerate(times):  # the densest window starting at each admitted request
        while j < len(times) and times[j] < t + window:
            j += 1
        assert j - i <= limit
    assert len(times) >= limit * 3  # about duration / window full windows were used


async def test_memory_admit_now_decides_without_io_once_the_period_is_seeded() -> None:
    loads: list[float] = []

    async def loader(scope: Scope, since: float) -> int:
        loads.append(since)
        return 0

    q = MemoryQuota(loader)
    s = Scope("t:a", Limits(rpm=1, budget_usd=1.0))
    assert q.admit_now(req(1, s)) is None and loads == []  # the ledger needs the database first
    assert (await q.admit(req(1, s))).ok and len(loads) == 1
    refused = q.admit_now(req(2, s))
    assert refused is not None and refused.reason == "rpm" and len(loads) == 1
