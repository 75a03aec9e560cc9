"""gateway.interfaces.Admission: rate limits and budget reservation at admission, settle or
release afterwards, one usage event per finished request.

The reservation is the most the request can cost: prompt tokens + ``max_output_tokens`` (the
gateway passes the request's max_tokens, or the model's limit) at the model's catalogue
price. Settle charges the real usage (0 USD for cache hits: nothing ran upstream; the tokens
are still metered). A ticket finishes once; a second settle/release is ignored.
If the quota store (Redis) is unreachable, admission fails closed: 503 ``QuotaUnavailable``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from admin.auth import SCOPES_ATTR
from admin.models import UsageEvent
from admin.pricing import Catalogue, TokenPrice
from admin.quota import AdmitRequest, Decision, QuotaStore, Scope
from admin.usage import UsageRecorder
from gateway.errors import BudgetExceeded, GatewayError, RateLimited
from gateway.interfaces import Estimate, Outcome, Principal, Ticket

log = logging.getLogger("turnout.admin.admission")


class QuotaUnavailable(GatewayError):
    """Limits and budgets cannot be checked (Redis down): refuse rather than overspend."""

    status = 503
    error_type = "service_unavailable"
    code = "quota_store_unavailable"


def ratelimit_headers(decision: Decision, scopes: tuple[Scope, ...]) -> dict[str, str]:
    """OpenAI-style x-ratelimit-* for the tightest scope (the refusing one when refused)."""
    headers: dict[str, str] = {}
    for (requests, tokens), scope in zip(decision.remaining, scopes, strict=False):
        if decision.scope and scope.id != decision.scope:
            continue
        lim = scope.limits
        if lim.rpm is not None and requests is not None and (
                "x-ratelimit-remaining-requests" not in headers
                or requests < int(headers["x-ratelimit-remaining-requests"])):
            headers["x-ratelimit-limit-requests"] = str(lim.rpm)
            headers["x-ratelimit-remaining-requests"] = str(requests)
        if lim.tpm is not None and tokens is not None and (
                "x-ratelimit-remaining-tokens" not in headers
                or tokens < int(headers["x-ratelimit-remaining-tokens"])):
            headers["x-ratelimit-limit-tokens"] = str(lim.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(tokens)
    if not decision.ok and decision.reason in ("rpm", "tpm"):
        kind = "requests" if decision.reason == "rpm" else "tokens"
        headers[f"x-ratelimit-reset-{kind}"] = f"{decision.retry_after:.3f}s"
    return headers


class QuotaAdmission:
    def __init__(
        self, quota: QuotaStore, catalogue: Catalogue, usage: UsageRecorder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.quota = quota
        self.catalogue = catalogue
        self.usage = usage
        self._clock = clock
        # ids unique across processes and restarts without a syscall per request
        self._id_prefix = secrets.token_hex(6)
        self._ids = itertools.count()

    async def admit(self, principal: Principal, estimate: Estimate) -> Ticket:
        scopes: tuple[Scope, ...] = principal.attributes.get(SCOPES_ATTR, ())  # limited ones only
        price = self.catalogue.price(estimate.model)
        prompt, out = estimate.prompt_tokens, estimate.max_output_tokens
        req = AdmitRequest(
            f"{self._id_prefix}{next(self._ids):x}",  # the ticket's id, also its usage event's
            scopes, prompt + out, price.cost_nusd(prompt, out), self._clock(),
        )
        if scopes:
            try:
                decision = self.quota.admit_now(req) or await self.quota.admit(req)
            except (OSError, RedisError) as exc:
                log.error("quota store unavailable: %s", exc)
                raise QuotaUnavailable("rate limits and budgets cannot be checked right now") from exc
            if not decision.ok:
                raise self._refusal(decision, scopes)
        return AdmissionTicket(self, principal, estimate, req, price)

    @staticmethod
    def _refusal(decision: Decision, scopes: tuple[Scope, ...]) -> RateLimited:
        subject = decision.scope.replace("k:", "API key ", 1).replace("t:", "tenant ", 1)
        headers = ratelimit_headers(decision, scopes)
        if decision.reason == "budget":
            return BudgetExceeded(
                f"{subject} has exhausted its budget for this period", retry_after=decision.retry_after,
                headers=headers,
            )
        what = {"rpm": "requests per minute", "tpm": "tokens per minute",
                "concurrency": "concurrent requests"}[decision.reason]
        return RateLimited(
            f"rate limit reached for {subject}: {what}", retry_after=decision.retry_after, headers=headers,
        )


class AdmissionTicket:
    __slots__ = ("_done", "_owner", "estimate", "price", "principal", "req")

    def __init__(
        self, owner: QuotaAdmission, principal: Principal, estimate: Estimate, req: AdmitRequest,
        price: TokenPrice,
    ) -> None:
        self._owner = owner
        self.principal = principal
        self.estimate = estimate
        self.req = req
        self.price = price
        self._done = False

    def settle(self, outcome: Outcome) -> None:
        if self._done:
            return
        self._done = True
        usage = outcome.usage
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        cost = 0 if outcome.cached else self.price.cost_nusd(prompt, completion)
        # The usage event is recorded first and unconditionally: the quota store's own
        # failure (Redis down) must not lose metering; its reservation then expires by lease.
        self._record(outcome.model, outcome.deployment, prompt, completion, cost, outcome.status,
                     outcome.latency_s, outcome.cached, outcome.stream)
        if self.req.scopes:
            self._finish(prompt + completion, cost)

    def release(self, status: int) -> None:
        if self._done:
            return
        self._done = True
        self._record(self.estimate.model, None, 0, 0, 0, status, 0.0, False, False)
        if self.req.scopes:
            self._finish(None, 0)

    def _finish(self, tokens: int | None, cost: int) -> None:
        done = self._owner.quota.finish_soon(self.req, tokens, cost)
        if isinstance(done, list):
            if done:
                _alert(done)
        else:
            done.add_done_callback(_after_finish)

    def _record(
        self, model: str, deployment: str | None, prompt: int, completion: int, cost: int,
        status: int, latency_s: float, cached: bool, stream: bool,
    ) -> None:
        principal, owner = self.principal, self._owner
        owner.usage.record(UsageEvent(
            self.req.req_id, owner._clock(), self.estimate.request_id, principal.tenant,
            principal.key_id, model, deployment, prompt, completion, cost, status,
            math.ceil(latency_s * 1000), cached, stream,
        ))


def _after_finish(done: asyncio.Future[list[str]]) -> None:
    if done.cancelled():
        return
    exc = done.exception()
    if exc is not None:
        log.error("settling a reservation failed (it expires with its lease): %s", exc)
        return
    _alert(done.result())


def _alert(crossed: list[str]) -> None:
    for scope_id in crossed:
        log.warning("budget alert: %s passed its soft threshold", scope_id)
