"""Rate limits (RPM, TPM, concurrency) and budgets, checked and reserved in one atomic step.

Semantics, identical for the in-memory store (one process) and the Redis store (replicas):
- RPM and TPM are exact sliding 60-second windows: in any 60 s no more than the limit is
  admitted. TPM counts the estimate (prompt + max output tokens) at admission and is corrected
  to the real usage at settle (to 0 on release).
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

import functools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from admin.models import Limits

WINDOW_S = 60.0
SpentLoader = Callable[["Scope", float], Awaitable[int]]


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


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    req_id: str
    scopes: tuple[Scope, ...]
    tokens: int
    cost_nusd: int
    now: float


@dataclass(slots=True)
class Decision:
    ok: bool
    reason: str = ""  # rpm | tpm | concurrency | budget
    scope: str = ""
    retry_after: float = 0.0
    # refusals only, per scope: (requests remaining, tokens remaining); None where unlimited
    remaining: list[tuple[int | None, int | None]] = field(default_factory=list)
    at: float = 0.0  # the clock reading the decision was made at


class QuotaStore(Protocol):
    async def admit(self, req: AdmitRequest) -> Decision: ...

    async def finish(
        self, req: AdmitRequest, tokens: int | None, cost_nusd: int, now: float,
    ) -> list[str]:
        """Settle (tokens given) or release (tokens None). Returns ids of scopes whose spend
        crossed their soft-alert threshold with this settle."""
        ...

    async def budget_state(self, scope: Scope, now: float) -> tuple[int, int] | None:
        """(spent, reserved) nano-USD in the current period, None if not loaded here."""
        ...


class _Window:
    """Weighted sliding log: entries older than WINDOW_S stop counting."""

    __slots__ = ("entries", "span", "total", "weights")

    def __init__(self, span: float = WINDOW_S) -> None:
        self.span = span
        self.entries: deque[tuple[float, str]] = deque()
        self.weights: dict[str, int] = {}
        self.total = 0

    def purge(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - self.span:
            _, rid = self.entries.popleft()
            self.total -= self.weights.pop(rid, 0)

    def retry_after(self, now: float) -> float:
        return max(self.entries[0][0] + self.span - now, 0.001) if self.entries else 1.0

    def add(self, now: float, rid: str, weight: int) -> None:
        self.entries.append((now, rid))
        self.weights[rid] = weight
        self.total += weight

    def adjust(self, rid: str, weight: int) -> None:
        if rid in self.weights:
            self.total += weight - self.weights[rid]
            self.weights[rid] = weight


@dataclass(slots=True)
class _Ledger:
    spent: int
    reserved: dict[str, tuple[int, float]] = field(default_factory=dict)  # rid -> (cost, lease end)
    reserved_total: int = 0
    next_expiry: float = float("inf")

    def reserve(self, rid: str, cost: int, lease_end: float) -> None:
        self.reserved[rid] = (cost, lease_end)
        self.reserved_total += cost
        self.next_expiry = min(self.next_expiry, lease_end)

    def drop(self, rid: str) -> None:
        cost, _ = self.reserved.pop(rid, (0, 0.0))
        self.reserved_total -= cost

    def purge(self, now: float) -> None:
        if now < self.next_expiry:
            return
        for rid in [r for r, (_, end) in self.reserved.items() if end <= now]:
            self.drop(rid)
        self.next_expiry = min((end for _, end in self.reserved.values()), default=float("inf"))


@dataclass(slots=True)
class _ScopeState:
    rpm: _Window
    tpm: _Window
    running: dict[str, float] = field(default_factory=dict)  # rid -> lease end
    ledgers: dict[str, _Ledger] = field(default_factory=dict)  # period id -> ledger


class MemoryQuota:
    """Single-process QuotaStore. ``admit`` and ``finish`` do their check-and-commit without
    an ``await`` in between, which makes them atomic on the event loop."""

    def __init__(self, load_spent: SpentLoader, lease: float = 600.0, *, window: float = WINDOW_S) -> None:
        self._window = window
        self._load = load_spent
        self._lease = lease
        self._scopes: dict[str, _ScopeState] = {}

    def _state(self, scope_id: str) -> _ScopeState:
        state = self._scopes.get(scope_id)
        if state is None:
            state = self._scopes[scope_id] = _ScopeState(_Window(self._window), _Window(self._window))
        return state

    async def _ensure_ledger(self, scope: Scope, now: float) -> None:
        period = period_of(scope.limits.budget_period, now)
        if period.id not in self._state(scope.id).ledgers:
            spent = await self._load(scope, period.start)
            ledgers = self._state(scope.id).ledgers
            ledgers.setdefault(period.id, _Ledger(spent))
            for old in [p for p in ledgers if p != period.id]:
                del ledgers[old]

    async def admit(self, req: AdmitRequest) -> Decision:
        for scope in req.scopes:
            if scope.limits.budget_usd is not None:
                await self._ensure_ledger(scope, req.now)
        for scope in req.scopes:
            refusal = self._check(scope, req)
            if refusal is not None:
                refusal.remaining = self._remaining(req)
                refusal.at = req.now
                return refusal
        for scope in req.scopes:
            self._commit(scope, req)
        return Decision(True, at=req.now)

    def _check(self, scope: Scope, req: AdmitRequest) -> Decision | None:
        lim, st, now = scope.limits, self._state(scope.id), req.now
        st.rpm.purge(now)
        st.tpm.purge(now)
        if lim.rpm is not None and len(st.rpm.entries) + 1 > lim.rpm:
            return Decision(False, "rpm", scope.id, st.rpm.retry_after(now))
        if lim.tpm is not None and st.tpm.total + req.tokens > lim.tpm:
            return Decision(False, "tpm", scope.id, st.tpm.retry_after(now))
        expired = []
        for rid, end in st.running.items():  # insertion order is lease order (fixed lease)
            if end > now:
                break
            expired.append(rid)
        for rid in expired:
            del st.running[rid]
        if lim.concurrency is not None and len(st.running) + 1 > lim.concurrency:
            return Decision(False, "concurrency", scope.id, 1.0)
        if lim.budget_usd is not None:
            period = period_of(lim.budget_period, now)
            ledger = st.ledgers[period.id]
            ledger.purge(now)
            budget = round(lim.budget_usd * 1e9)
            if ledger.spent >= budget or ledger.spent + ledger.reserved_total + req.cost_nusd > budget:
                return Decision(False, "budget", scope.id, period.end - now)
        return None

    def _commit(self, scope: Scope, req: AdmitRequest) -> None:
        lim, st = scope.limits, self._state(scope.id)
        if lim.rpm is not None:
            st.rpm.add(req.now, req.req_id, 1)
        if lim.tpm is not None:
            st.tpm.add(req.now, req.req_id, req.tokens)
        if lim.concurrency is not None:
            st.running[req.req_id] = req.now + self._lease
        if lim.budget_usd is not None:
            ledger = st.ledgers[period_of(lim.budget_period, req.now).id]
            ledger.reserve(req.req_id, req.cost_nusd, req.now + self._lease)

    def _remaining(self, req: AdmitRequest) -> list[tuple[int | None, int | None]]:
        out: list[tuple[int | None, int | None]] = []
        for scope in req.scopes:
            st, lim = self._state(scope.id), scope.limits
            out.append((
                None if lim.rpm is None else max(lim.rpm - len(st.rpm.entries), 0),
                None if lim.tpm is None else max(lim.tpm - st.tpm.total, 0),
            ))
        return out

    async def finish(
        self, req: AdmitRequest, tokens: int | None, cost_nusd: int, now: float,
    ) -> list[str]:
        crossed: list[str] = []
        for scope in req.scopes:
            st = self._state(scope.id)
            st.running.pop(req.req_id, None)
            st.tpm.adjust(req.req_id, tokens or 0)
            if scope.limits.budget_usd is None:
                continue
            ledger = st.ledgers.get(period_of(scope.limits.budget_period, req.now).id)
            if ledger is None:
                continue
            ledger.drop(req.req_id)
            if tokens is not None:
                soft = round(scope.limits.budget_usd * scope.limits.soft_alert * 1e9)
                before, ledger.spent = ledger.spent, ledger.spent + cost_nusd
                if before < soft <= ledger.spent:
                    crossed.append(scope.id)
        return crossed

    async def budget_state(self, scope: Scope, now: float) -> tuple[int, int] | None:
        ledger = self._state(scope.id).ledgers.get(period_of(scope.limits.budget_period, now).id)
        return None if ledger is None else (ledger.spent, ledger.reserved_total)
