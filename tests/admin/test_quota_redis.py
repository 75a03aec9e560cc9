"""RedisQuota's bucketed windows on the real Redis: never more than the limit in any window, at
most one bucket stricter than an exact log, Redis memory bounded by the bucket count, and a
settle corrects the bucket its admission counted in. (The semantics it shares with MemoryQuota
are tested in test_quota.py against both stores.)"""

from __future__ import annotations

import random

import pytest
import redis.asyncio as aioredis

from admin.models import Limits
from admin.quota import WINDOW_S, AdmitRequest, Scope
from admin.quota_redis import BUCKETS_PER_WINDOW, RedisQuota
from tests.admin.exact_log import ExactLog

pytestmark = pytest.mark.redis
T0 = 1_750_000_000.0
BUCKET_S = WINDOW_S / BUCKETS_PER_WINDOW


async def no_spend(scope: Scope, since: float) -> int:
    return 0


def req(i: int, scope: Scope, now: float, tokens: int = 1) -> AdmitRequest:
    return AdmitRequest(f"r{i}", (scope,), tokens, 0, now)


def quota(client: aioredis.Redis, prefix: str) -> RedisQuota:
    return RedisQuota(client, prefix, no_spend, server_time=False)


async def test_rpm_never_exceeds_the_limit_and_is_at_most_one_bucket_stricter(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    rng = random.Random(7)
    limit = 30
    q = quota(redis_client, redis_prefix)
    scope = Scope("k:a", Limits(rpm=limit))
    log = ExactLog(limit, BUCKET_S)
    now = T0
    for i in range(1_500):  # bursts and gaps over ~5 windows
        now += rng.choice((0.001, 0.05, 0.2, 3.0))
        decision = await q.admit(req(i, scope, now))
        log.check(now, decision)
        if not decision.ok:
            assert decision.remaining == [(0, None)]
    assert len(log.admitted) > 3 * limit
    log.assert_never_over_the_limit()


async def test_redis_memory_is_bounded_by_buckets_not_by_requests(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    q = quota(redis_client, redis_prefix)
    scope = Scope("t:a", Limits(rpm=10**9, tpm=10**12))
    requests, seconds = 6_000, 90
    for i in range(requests):
        assert (await q.admit(req(i, scope, T0 + i * seconds / requests, tokens=10))).ok
    base = f"{redis_prefix}q:t:a:"
    assert await redis_client.llen(base + "wl") <= BUCKETS_PER_WINDOW + 1
    assert await redis_client.hlen(base + "w") <= 2 * (BUCKETS_PER_WINDOW + 1) + 2
    sums = await redis_client.hmget(base + "w", ["_r", "_t"])
    counted, tokens = int(sums[0] or 0), int(sums[1] or 0)
    in_window = round(requests * WINDOW_S / seconds)
    assert in_window <= counted <= in_window + requests * BUCKET_S / seconds + 1
    assert tokens == 10 * counted


async def test_a_late_settle_changes_nothing_and_a_stepped_back_one_corrects_its_bucket(
        redis_client: aioredis.Redis, redis_prefix: str) -> None:
    q = quota(redis_client, redis_prefix)
    scope = Scope("k:a", Limits(tpm=1_000))
    old = req(1, scope, T0, tokens=600)
    assert (await q.admit(old)).ok
    assert (await q.admit(req(2, scope, T0 + 61, tokens=300))).ok  # old's bucket left the window
    await q.finish(old, 10, 0)  # must not take 590 tokens off the newer bucket
    behind = req(3, scope, T0 + 55, tokens=400)  # a replica whose clock is 6 s behind
    assert (await q.admit(behind)).ok
    assert behind.window_bucket == round((T0 + 61) / BUCKET_S)  # counted in the newest bucket
    await q.finish(behind, 100, 0)  # settled at 100 real tokens: 300 back
    assert (await q.admit(req(4, scope, T0 + 62, tokens=600))).ok  # 300 + 100 + 600 fit
    refused = await q.admit(req(5, scope, T0 + 62, tokens=1))
    assert refused.reason == "tpm" and refused.remaining == [(None, 0)]
