"""QuotaStore for one process (see quota.py for the semantics it shares with RedisQuota).

``admit`` and ``finish_now`` do their check-and-commit without an ``await`` in between, which
makes them atomic on the event loop. Both run once per request, so the per-scope state is laid
out for the hot path: RPM is a log of admission times only (no ids), TPM keeps ids because
settle corrects an entry to the real usage, and each scope holds the ledger of its current
budget period directly (a new period is seeded from the database on first use, the only await).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from admin.models import Limits
from admin.quota import WINDOW_S, AdmitRequest, Decision, Period, Scope, SpentLoader, period_of

ADMITTED = Decision(True)
UNSEEDED = Decision(False, "unseeded")  # internal to this module: admit_now answers None


@dataclass(slots=True)
class _Ledger:
    period: Period
    kind: str
    spent: int
    reserved: dict[str, tuple[int, float]] = field(default_factory=dict)  # rid -> (cost, lease end)
    reserved_total: int = 0
    next_expiry: float = float("inf")

    def covers(self, kind: str, now: float) -> bool:
        return self.kind == kind and self.period.start <= now < self.period.end

    def purge(self, now: float) -> None:
        if now < self.next_expiry:
            return
        for rid in [r for r, (_, end) in self.reserved.items() if end <= now]:
            self.reserved_total -= self.reserved.pop(rid)[0]
        self.next_expiry = min((end for _, end in self.reserved.values()), default=float("inf"))


class _State:
    """Counters of one scope. Limits are read from the request's Scope every time (they can
    change at runtime); only counts live here, plus the limits' nano-USD amounts, derived
    again whenever the Limits object changes."""

    __slots__ = ("ledger", "rpm", "running", "tpm", "tpm_total", "tpm_weights")

    def __init__(self) -> None:
        self.rpm: deque[float] = deque()  # admission times, oldest first
        self.tpm: deque[tuple[float, str]] = deque()
        self.tpm_weights: dict[str, int] = {}
        self.tpm_total = 0
        self.running: dict[str, float] = {}  # rid -> lease end; insertion order is lease order
        self.ledger: _Ledger | None = None

    def needs_ledger(self, lim: Limits, now: float) -> bool:
        """A budget applies but this process has not seeded the ledger of now's period yet."""
        return lim.budget_usd is not None and (self.ledger is None or not self.ledger.covers(lim.budget_period, now))

    def check(self, lim: Limits, req: AdmitRequest, scope_id: str, window: float) -> Decision | None:
        """Expire what left the window, then the refusal if ``req`` does not fit, UNSEEDED if the
        budget period's ledger must be seeded first, None if it fits. One call per scope: this
        runs for every scope of every request."""
        now = req.now
        cutoff = now - window
        rpm, tpm, running = self.rpm, self.tpm, self.running
        while rpm and rpm[0] <= cutoff:
            rpm.popleft()
        while tpm and tpm[0][0] <= cutoff:
            self.tpm_total -= self.tpm_weights.pop(tpm.popleft()[1], 0)
        while running:  # lease order: stop at the first lease still held
            rid = next(iter(running))
            if running[rid] > now:
                break
            del running[rid]
        if lim.rpm is not None and len(rpm) >= lim.rpm:
            return Decision(False, "rpm", scope_id, max(rpm[0] + window - now, 0.001) if rpm else 1.0)
        if lim.tpm is not None and self.tpm_total + req.tokens > lim.tpm:
            return Decision(False, "tpm", scope_id, max(tpm[0][0] + window - now, 0.001) if tpm else 1.0)
        if lim.concurrency is not None and len(running) >= lim.concurrency:
            return Decision(False, "concurrency", scope_id, 1.0)
        return None if lim.budget_usd is None else self._budget_check(lim, req, scope_id)

    def _budget_check(self, lim: Limits, req: AdmitRequest, scope_id: str) -> Decision | None:
        now, ledger = req.now, self.ledger
        if ledger is None or not ledger.covers(lim.budget_period, now):
            return UNSEEDED
        if now >= ledger.next_expiry:
            ledger.purge(now)
        budget = round((lim.budget_usd or 0.0) * 1e9)
        if ledger.spent >= budget or ledger.spent + ledger.reserved_total + req.cost_nusd > budget:
            return Decision(False, "budget", scope_id, ledger.period.end - now)
        return None

    def commit(self, lim: Limits, req: AdmitRequest, lease: float) -> None:
        now, rid = req.now, req.req_id
        if lim.rpm is not None:
            self.rpm.append(now)
        if lim.tpm is not None:
            self.tpm.append((now, rid))
            self.tpm_weights[rid] = req.tokens
            self.tpm_total += req.tokens
        if lim.concurrency is not None:
            self.running[rid] = now + lease
        ledger = self.ledger
        if lim.budget_usd is not None and ledger is not None:
            ledger.reserved[rid] = (req.cost_nusd, now + lease)
            ledger.reserved_total += req.cost_nusd
            if now + lease < ledger.next_expiry:
                ledger.next_expiry = now + lease

    def finish(self, lim: Limits, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> bool:
        """Undo the reservation, count the real use; True if spend crossed the soft alert."""
        rid = req.req_id
        if self.running:
            self.running.pop(rid, None)
        weights = self.tpm_weights
        old = weights.get(rid) if weights else None
        if old is not None:
            weights[rid] = tokens or 0
            self.tpm_total += (tokens or 0) - old
        ledger = self.ledger
        if lim.budget_usd is None or ledger is None or not ledger.covers(lim.budget_period, req.now):
            return False  # the admission's period has ended: its reservation went with it
        reserved = ledger.reserved.pop(rid, None)
        if reserved is not None:
            ledger.reserved_total -= reserved[0]
        if tokens is None:
            return False
        soft = round(lim.budget_usd * lim.soft_alert * 1e9)
        before = ledger.spent
        ledger.spent += cost_nusd
        return before < soft <= ledger.spent


class MemoryQuota:
    def __init__(self, load_spent: SpentLoader, lease: float = 600.0, *, window: float = WINDOW_S) -> None:
        self._window = window
        self._load = load_spent
        self._lease = lease
        self._scopes: dict[str, _State] = {}

    def _state(self, scope_id: str) -> _State:
        state = self._scopes.get(scope_id)
        if state is None:
            state = self._scopes[scope_id] = _State()
        return state

    async def _open_period(self, scope: Scope, state: _State, now: float) -> None:
        """Seed the ledger of the period containing ``now`` (its first use in this process)."""
        kind = scope.limits.budget_period
        period = period_of(kind, now)
        spent = await self._load(scope, period.start)
        if state.needs_ledger(scope.limits, now):  # not seeded by another admission meanwhile
            state.ledger = _Ledger(period, kind, spent)

    async def admit(self, req: AdmitRequest) -> Decision:
        for scope in req.scopes:
            state = self._state(scope.id)
            if state.needs_ledger(scope.limits, req.now):
                await self._open_period(scope, state, req.now)
        decision = self.admit_now(req)
        assert decision is not None  # every ledger is open and nothing awaited since
        return decision

    def admit_now(self, req: AdmitRequest) -> Decision | None:
        """Check-then-commit with no await in between (atomic on the event loop); None when a
        budget period has to be seeded from the database first."""
        scopes = req.scopes
        states = []
        for scope in scopes:  # every scope checked before any is committed
            state = self._scopes.get(scope.id) or self._state(scope.id)
            refusal = state.check(scope.limits, req, scope.id, self._window)
            if refusal is not None:
                return self._refused(refusal, req)
            states.append(state)
        for i, state in enumerate(states):
            state.commit(scopes[i].limits, req, self._lease)
        return ADMITTED

    def _refused(self, refusal: Decision, req: AdmitRequest) -> Decision | None:
        return None if refusal is UNSEEDED else refusal._replace(remaining=self._remaining(req), at=req.now)

    def _remaining(self, req: AdmitRequest) -> list[tuple[int | None, int | None]]:
        out: list[tuple[int | None, int | None]] = []
        for scope in req.scopes:
            state, lim = self._state(scope.id), scope.limits
            out.append((
                None if lim.rpm is None else max(lim.rpm - len(state.rpm), 0),
                None if lim.tpm is None else max(lim.tpm - state.tpm_total, 0),
            ))
        return out

    def finish_now(self, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> Sequence[str]:
        crossed: Sequence[str] = ()  # the usual answer, without building a list
        for scope in req.scopes:
            state = self._scopes.get(scope.id)
            if state is not None and state.finish(scope.limits, req, tokens, cost_nusd):
                crossed = [*crossed, scope.id]
        return crossed

    finish_soon = finish_now  # nothing to wait for: the ids themselves are the Finished result

    async def finish(self, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> Sequence[str]:
        return self.finish_now(req, tokens, cost_nusd)

    async def drain(self) -> None:
        return None

    async def budget_state(self, scope: Scope, now: float) -> tuple[int, int] | None:
        ledger = self._state(scope.id).ledger
        if ledger is None or not ledger.covers(scope.limits.budget_period, now):
            return None
        return ledger.spent, ledger.reserved_total
