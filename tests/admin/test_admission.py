from __future__ import annotations

from pathlib import Path

import pytest

from admin.admission import QuotaAdmission
from admin.auth import resolve
from admin.models import ApiKey, Limits, Tenant
from admin.pricing import Catalogue, TokenPrice
from admin.quota import AdmitRequest, Decision, Scope
from admin.quota_memory import MemoryQuota
from admin.usage import UsageRecorder
from backends.base import Usage
from gateway.errors import BudgetExceeded, RateLimited
from gateway.interfaces import Estimate, Outcome, Principal


async def no_spend(scope: Scope, since: float) -> int:
    return 0


class RecordingQuota(MemoryQuota):
    def __init__(self) -> None:
        super().__init__(no_spend)
        self.admitted: list[AdmitRequest] = []

    def admit_now(self, req: AdmitRequest) -> Decision | None:
        self.admitted.append(req)
        return super().admit_now(req)


def principal(key_limits: Limits, tenant_limits: Limits) -> Principal:
    key = ApiKey("0123456789", "acme", "h", limits=key_limits)
    return resolve(key, Tenant("acme", "Acme", tenant_limits)).principal


Setup = tuple[QuotaAdmission, RecordingQuota, UsageRecorder]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    quota = RecordingQuota()
    usage = UsageRecorder(lambda events: None, tmp_path)  # type: ignore[arg-type,return-value]
    prices = Catalogue({"m": TokenPrice(1e-6, 2e-6, "config")})
    return QuotaAdmission(quota, prices, usage, clock=lambda: 1_750_000_000.0), quota, usage


async def test_only_limited_scopes_reach_the_quota_store(setup: Setup) -> None:
    admission, quota, usage = setup
    ticket = await admission.admit(principal(Limits(), Limits()), Estimate("m", 10, 20, "r1"))
    assert quota.admitted == []
    ticket.settle(Outcome("m", "d", Usage(10, 5), 200, 0.1))
    ticket.settle(Outcome("m", "d", Usage(10, 5), 200, 0.1))  # a second finish is ignored
    assert usage.pending() == 1
    await admission.admit(principal(Limits(), Limits(rpm=5)), Estimate("m", 10, 20, "r2"))
    req = quota.admitted[0]
    assert [s.id for s in req.scopes] == ["t:acme"]
    assert req.tokens == 30 and req.cost_nusd == 10 * 1000 + 20 * 2000  # 1e-6 and 2e-6 USD per token


async def test_refusals_map_to_openai_errors(setup: Setup) -> None:
    admission, _, usage = setup
    p = principal(Limits(rpm=1, tpm=1000), Limits(budget_usd=0.0001))
    ticket = await admission.admit(p, Estimate("m", 10, 20, "r1"))
    with pytest.raises(RateLimited) as info:
        await admission.admit(p, Estimate("m", 10, 20, "r2"))
    assert not isinstance(info.value, BudgetExceeded)
    assert info.value.headers["x-ratelimit-limit-requests"] == "1"
    assert info.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert info.value.headers["x-ratelimit-remaining-tokens"] == "970"
    ticket.release(502)
    p2 = principal(Limits(), Limits(budget_usd=0.00001))  # 10,000 nano-USD: less than one request
    with pytest.raises(BudgetExceeded) as budget:
        await admission.admit(p2, Estimate("m", 10, 20, "r3"))
    assert budget.value.code == "insufficient_quota" and budget.value.retry_after
    assert usage.pending() == 1  # the released ticket's event (status 502)


async def test_unreachable_redis_fails_closed_with_503(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    from admin.admission import QuotaUnavailable
    from admin.quota_redis import RedisQuota
    from gateway.errors import to_http
    from tests.admin.cluster import free_port

    client = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    usage = UsageRecorder(lambda events: None, tmp_path)  # type: ignore[arg-type,return-value]
    admission = QuotaAdmission(RedisQuota(client, "x:", no_spend), Catalogue({}), usage)
    with pytest.raises(QuotaUnavailable) as info:
        await admission.admit(principal(Limits(rpm=1), Limits()), Estimate("m", 1, 1, "r"))
    assert to_http(info.value).status == 503
    await client.aclose()
