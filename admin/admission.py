"""gateway.interfaces.Admission: rate limits and budget reservation at admission, settle or
release afterwards, and the usage of every finished request metered (admin.usage).

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
import secrets
import time
from collections.abc import Callable, Sequence

from redis.exceptions import RedisError

from admin.auth import SCOPES_ATTR
from admin.pricing import Catalogue
from admin.quota import AdmitRequest, Decision, Finished, QuotaStore, Scope
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

    def admit_now(self, principal: Principal, estimate: Estimate) -> Ticket | None:
        """The ticket when the quota store decides without I/O (memory, once the budget period
        is seeded), else None: then ``admit``."""
        ticket = AdmissionTicket(self, principal, estimate)
        if ticket.scopes:
            try:
                decision = self.quota.admit_now(ticket)
            except (OSError, RedisError) as exc:
                raise _unavailable(exc) from exc
            if decision is None:
                return None
            if not decision.ok:
                raise self._refusal(decision, ticket.scopes)
        return ticket

    async def admit(self, principal: Principal, estimate: Estimate) -> Ticket:
        ticket = AdmissionTicket(self, principal, estimate)
        if ticket.scopes:
            try:
                decision = await self.quota.admit(ticket)
            except (OSError, RedisError) as exc:
                raise _unavailable(exc) from exc
            if not decision.ok:
                raise self._refusal(decision, ticket.scopes)
        return ticket

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


def _unavailable(exc: BaseException) -> QuotaUnavailable:
    log.error("quota store unavailable: %s", exc)
    return QuotaUnavailable("rate limits and budgets cannot be checked right now")


class AdmissionTicket(AdmitRequest):
    """The admitted request itself (what the quota store reserved, so one object per request
    instead of two) plus what settling it needs."""

    __slots__ = ("_done", "_owner", "model", "price", "principal")

    def __init__(self, owner: QuotaAdmission, principal: Principal, estimate: Estimate) -> None:
        price = owner.catalogue.price(estimate.model)
        prompt, out = estimate.prompt_tokens, estimate.max_output_tokens
        self.req_id = f"{owner._id_prefix}{next(owner._ids):x}"
        self.scopes = principal.attributes.get(SCOPES_ATTR, ())  # limited scopes only
        self.tokens = prompt + out
        self.cost_nusd = price.cost_nusd(prompt, out)
        self.now = owner._clock()
        self.window_bucket = -1
        self._owner = owner
        self.principal = principal
        self.model = estimate.model
        self.price = price
        self._done = False

    def settle(self, outcome: Outcome) -> None:
        if self._done:
            return
        self._done = True
        usage, principal, owner = outcome.usage, self.principal, self._owner
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        cost = 0 if outcome.cached else self.price.cost_nusd(prompt, completion)
        # Usage is recorded first and unconditionally: the quota store's own failure (Redis
        # down) must not lose metering; its reservation then expires by lease.
        owner.usage.add(self.now, principal.tenant, principal.key_id, outcome.model, prompt, completion, cost,
                        outcome.status, outcome.cached)
        if self.scopes:
            done = owner.quota.finish_soon(self, prompt + completion, cost)
            if done:  # the usual answer is () at once: nothing crossed its alert
                _finished(done)

    def release(self, status: int) -> None:
        if self._done:
            return
        self._done = True
        principal, owner = self.principal, self._owner
        owner.usage.add(self.now, principal.tenant, principal.key_id, self.model, 0, 0, 0, status, False)
        if self.scopes:
            done = owner.quota.finish_soon(self, None, 0)
            if done:
                _finished(done)


def _finished(done: Finished) -> None:
    """What finishing a ticket gave back: alerts now, or when the store's future completes."""
    if isinstance(done, asyncio.Future):
        done.add_done_callback(_after_finish)
    else:
        _alert(done)


def _after_finish(done: asyncio.Future[list[str]]) -> None:
    if done.cancelled():
        return
    exc = done.exception()
    if exc is not None:
        log.error("settling a reservation failed (it expires with its lease): %s", exc)
        return
    _alert(done.result())


def _alert(crossed: Sequence[str]) -> None:
    for scope_id in crossed:
        log.warning("budget alert: %s passed its soft threshold", scope_id)
