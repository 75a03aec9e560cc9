"""MemoryQuota's bucketed windows: never more than the limit in any window, at most one bucket
stricter than an exact log, memory bounded by the bucket count. (The semantics it shares with
RedisQuota are tested in test_quota.py against both stores.)"""

from __future__ import annotations

import random

from admin.models import Limits
from admin.quota import WINDOW_S, AdmitRequest, Scope
from admin.quota_memory import BUCKETS_PER_S, MemoryQuota
from tests.admin.exact_log import ExactLog

T0 = 1_750_000_000.0
BUCKET_S = 1 / BUCKETS_PER_S


async def no_spend(scope: Scope, since: float) -> int:
    return 0


def req(i: int, scope: Scope, now: float, tokens: int = 1) -> AdmitRequest:
    return AdmitRequest(f"r{i}", (scope,), tokens, 0, now)


def test_rpm_never_exceeds_the_limit_and_is_at_most_one_bucket_stricter() -> None:
    rng = random.Random(7)
    limit = 50
    q = MemoryQuota(no_spend)
    scope = Scope("k:a", Limits(rpm=limit))
    log = ExactLog(limit, BUCKET_S)
    now = T0
    for i in range(6_000):  # bursts and gaps over ~5 windows
        now += rng.choice((0.001, 0.01, 0.2, 1.5))
        decision = q.admit_now(req(i, scope, now))
        assert decision is not None
        log.check(now, decision)
    assert len(log.admitted) > 4 * limit
    log.assert_never_over_the_limit()


def test_memory_is_bounded_by_buckets_not_by_requests() -> None:
    q = MemoryQuota(no_spend)
    scope = Scope("t:a", Limits(rpm=10**9, tpm=10**12))
    requests = 200_000
    for i in range(requests):  # 200k admissions spread over 90 s
        assert q.admit_now(req(i, scope, T0 + i * 90 / requests, tokens=10)) == (True, "", "", 0.0, (), 0.0)
    state = q._scopes["t:a"]
    assert len(state.window.buckets) <= WINDOW_S * BUCKETS_PER_S + 1
    in_window = round(requests * WINDOW_S / 90)
    assert in_window <= state.window.requests <= in_window + requests * BUCKET_S / 90 + 1
    assert state.window.tokens == 10 * state.window.requests


def test_tpm_correction_after_the_bucket_left_changes_nothing() -> None:
    q = MemoryQuota(no_spend)
    scope = Scope("k:a", Limits(tpm=1_000))
    old = req(1, scope, T0, tokens=600)
    assert q.admit_now(old) is not None
    assert q.admit_now(req(2, scope, T0 + 61, tokens=900)) is not None  # old's bucket expired
    q.finish_now(old, 10, 0)  # settled late: must not take 590 tokens off the new bucket
    assert q._scopes["k:a"].window.tokens == 900
    refused = q.admit_now(req(3, scope, T0 + 62, tokens=101))
    assert refused is not None and refused.reason == "tpm"


def test_a_clock_step_back_keeps_counting() -> None:
    q = MemoryQuota(no_spend)
    scope = Scope("k:a", Limits(rpm=2))
    assert q.admit_now(req(1, scope, T0 + 10)) is not None
    assert q.admit_now(req(2, scope, T0 + 5)) is not None  # the wall clock went back 5 s
    refused = q.admit_now(req(3, scope, T0 + 6))
    assert refused is not None and refused.reason == "rpm"
    window = q._scopes["k:a"].window
    assert list(window.buckets) == sorted(window.buckets) and window.requests == 2
    assert q.admit_now(req(4, scope, T0 + 70.2)) == (True, "", "", 0.0, (), 0.0)  # both left


async def test_a_settle_under_limits_that_changed_since_keeps_the_new_period_ledger() -> None:
    """A request admitted under a monthly budget settles after the scope moved to a daily one:
    its settle must leave the daily ledger (and the reservations in it) alone."""
    q = MemoryQuota(no_spend)
    nano = 10**9
    monthly = Scope("t:a", Limits(budget_usd=1.0, budget_period="month"))
    daily = Scope("t:a", Limits(budget_usd=1.0, budget_period="day"))
    old = AdmitRequest("r1", (monthly,), 1, nano // 10, T0)
    assert (await q.admit(old)).ok
    held = AdmitRequest("r2", (daily,), 1, 8 * nano // 10, T0 + 1)
    assert (await q.admit(held)).ok  # seeds the daily ledger, reserves $0.80
    q.finish_now(old, 1, nano // 10)  # the old admission settles under its own (monthly) limits
    refused = await q.admit(AdmitRequest("r3", (daily,), 1, 8 * nano // 10, T0 + 2))
    assert not refused.ok and refused.reason == "budget"  # $0.80 is still reserved
    assert q.finish_now(held, 1, 9 * nano // 10) == ["t:a"]  # crossed the daily soft alert (80%)
