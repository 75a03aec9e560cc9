"""Rate limits (RPM, TPM, concurrency) and budgets, checked and reserved in one atomic step.

Semantics, shared by the in-memory store (one process) and the Redis store (replicas):
- RPM and TPM are sliding 60-second windows: in any 60 s no more than the limit is
  admitted. Both stores sum 100 ms buckets (window / 600), so they may refuse up to one
  bucket of window early, never admit more. TPM counts the
  estimate (prompt + max output tokens) at admission and is corrected to the real usage at
  settle (to 0 on release).
- Concurrency counts admitted, unfinished requests; each holds a lease that expires after
  ``lease`` seconds so a crashed replica cannot leak slots forever.
- Budgets reserve the request's maximum cost at admission; settle moves the real cost from
  reserved to spent; release drops the reservation. A request is admitted only if
  ``spent + reserved + cost <= budget``; so settled spend never exceeds the budget unless a
  request's real cost exceeds its reservation. Spend per period is seeded once from the
  database (usage events) the first time a ledger is used.
- ``admit`` changes nothing when it refuses: either every scope admits, or none is touched.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from admin.models import Limits

WINDOW_S = 60.0
SpentLoader = Callable[["Scope", float], Awaitable[int]]
# What finishing a ticket gives back: the scopes that crossed their soft alert, at once (no I/O
# needed) or later (a Redis script).
Finished = Sequence[str] | asyncio.Future[list[str]]


@dataclass(frozen=True, slots=True)
class Scope:
    """One limited subject: ``k:<key id>`` or ``t:<tenant id>``."""

    id: str
    limits: Limits

    @property
    def kind(self) -> str:
        return "key" if self.id.startswith("k:") else "tenant"

    @property
    def subject(self) -> str:
        return self.id[2:]


@dataclass(frozen=True, slots=True)
class Period:
    id: str
    start: float
    end: float


def period_of(kind: str, now: float) -> Period:
    """The budget period (UTC day or month) containing ``now``; cached per day."""
    return _period_of_day(kind, int(now // 86400))


@functools.lru_cache(maxsize=64)
def _period_of_day(kind: str, day: int) -> Period:
    t = datetime.fromtimestamp(day * 86400, UTC)
    if kind == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromtimestamp(start.timestamp() + 86400, UTC)
        return Period(start.strftime("%Y-%m-%d"), start.timestamp(), end.timestamp())
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(
        month=start.month + 1)
    return Period(start.strftime("%Y-%m"), start.timestamp(), end.timestamp())


# Not frozen: built per request, frozen __init__ costs ~4x. Compared and hashed by identity: the
# in-memory store files its reservations under the request object itself.
@dataclass(slots=True, eq=False)
class AdmitRequest:
    req_id: str
    scopes: tuple[Scope, ...]
    tokens: int
    cost_nusd: int
    now: float
    # Set by the store at admission: the window bucket the admission counted in, which its
    # settle corrects (RedisQuota: the shared bucket; MemoryQuota: the request's own bucket;
    # -1: not counted in one).
    window_bucket: int = -1


class Decision(NamedTuple):
    """An admission's answer. A tuple: immutable, and the cheapest object to build per request
    (a dataclass with a default factory cost ~3x)."""

    ok: bool
    reason: str = ""  # rpm | tpm | concurrency | budget
    scope: str = ""
    retry_after: float = 0.0
    # per scope: (requests remaining, tokens remaining); None where unlimited. Refusals always;
    # the Redis store also on success.
    remaining: Sequence[tuple[int | None, int | None]] = ()
    at: float = 0.0  # the clock reading the decision was made at (0.0: an in-memory admission)


class QuotaStore(Protocol):
    async def admit(self, req: AdmitRequest) -> Decision: ...

    def admit_now(self, req: AdmitRequest) -> Decision | None:
        """The decision if it needs no I/O (the request path's usual case in one process),
        else None: then call ``admit``."""
        ...

    def finish_soon(self, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> Finished:
        """Start settling (tokens given) or releasing (tokens None) without blocking the caller.
        The result is the ids of scopes whose spend crossed their soft-alert threshold with this
        settle: a sequence when the store needed no I/O (memory), else a future of it (Redis)."""
        ...

    async def finish(self, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> Sequence[str]:
        """``finish_soon`` awaited. Periods and leases are those of the admission (``req.now``)."""
        ...

    async def drain(self) -> None:
        """Wait until every finish started so far has reached the store (before it closes)."""
        ...

    async def budget_state(self, scope: Scope, now: float) -> tuple[int, int] | None:
        """(spent, reserved) nano-USD in the current period, None if not loaded here."""
        ...
