"""QuotaStore for one process (see quota.py for the semantics it shares with RedisQuota).

``admit`` and ``finish_now`` do their check-and-commit without an ``await`` in between, which
makes them atomic on the event loop. Both run once per request, so the per-scope state is laid
out for the hot path: RPM and TPM are sums over 100 ms buckets (one ``_Window`` for both),
and each scope holds the ledger of its current budget period directly (a new period is seeded
from the database on first use, the only await).

Why buckets and not a log of admissions (RedisQuota counts in the same buckets): a log holds
one entry per request for the whole window, ~60 MB at 4,500 req/s, and walking it cost ~5% of the gateway's
throughput once it was full (shared-core A/B, 60 s against a 1 s window). Buckets hold at most
601 entries per window, whatever the rate. The price is one bucket of conservatism: an
admission counts from the start of its bucket, so for up to 100 ms longer than the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from admin.models import Limits
from admin.quota import WINDOW_S, AdmitRequest, Decision, Period, Scope, SpentLoader, period_of

BUCKETS_PER_S = 10
_NEVER = 1 << 62  # the oldest bucket of an empty window: never below a cutoff
_UNLIMITED = 1 << 62  # an absent RPM or TPM limit, as a number no count reaches
ADMITTED = Decision(True)
UNSEEDED = Decision(False, "unseeded")  # internal to this module: admit_now answers None


@dataclass(slots=True)
class _Ledger:
    period: Period
    kind: str
    spent: int
    # admitted request (by identity) -> (cost, lease end)
    reserved: dict[AdmitRequest, tuple[int, float]] = field(default_factory=dict)
    reserved_total: int = 0
    next_expiry: float = float("inf")

    def covers(self, kind: str, now: float) -> bool:
        return self.kind == kind and self.period.start <= now < self.period.end

    def purge(self, now: float) -> None:
        if now < self.next_expiry:
            return
        for req in [r for r, (_, end) in self.reserved.items() if end <= now]:
            self.reserved_total -= self.reserved.pop(req)[0]
        self.next_expiry = min((end for _, end in self.reserved.values()), default=float("inf"))


class _Window:
    """Requests and tokens admitted over a sliding window, summed per bucket of
    ``1 / BUCKETS_PER_S`` seconds, oldest bucket first (dicts keep insertion order and buckets
    are only ever added at the newest end). An admission counts while its bucket overlaps the
    window: conservative by at most one bucket."""

    __slots__ = ("buckets", "first", "requests", "tokens")

    def __init__(self) -> None:
        self.buckets: dict[int, list[int]] = {}  # bucket index -> [requests, tokens]
        self.requests = 0
        self.tokens = 0
        self.first = _NEVER  # the oldest bucket's index (_NEVER when empty): one compare per request

    def expire(self, cutoff: int) -> None:
        """Drop the buckets older than ``cutoff``."""
        buckets = self.buckets
        while buckets:
            oldest = next(iter(buckets))
            if oldest >= cutoff:
                self.first = oldest
                return
            requests, tokens = buckets.pop(oldest)
            self.requests -= requests
            self.tokens -= tokens
        self.first = _NEVER

    def open(self, bucket: int) -> list[int]:
        """The sums of a bucket not counted in yet: a new newest one, or the newest one if the
        wall clock stepped back (keeping the order; its settle then corrects a bucket of its
        own time, if any: a clamped, bounded error of one estimate, on a clock step only)."""
        buckets = self.buckets
        newest = next(reversed(buckets), None)
        if newest is None:
            self.first = bucket
        elif bucket < newest:
            bucket = newest
        return buckets.setdefault(bucket, [0, 0])

    def uncount(self, bucket: int, tokens: int) -> None:
        """Take back an admission counted just now in ``bucket`` (its bucket or, as ``open``
        chose when that was older than the newest, the newest: still there, nothing expired since)."""
        buckets = self.buckets
        sums = buckets.get(bucket) or buckets[next(reversed(buckets))]
        sums[0] -= 1
        sums[1] -= tokens
        self.requests -= 1
        self.tokens -= tokens

    def retry_after(self, now: float, span: int) -> float:
        """Seconds until the oldest bucket leaves a window of ``span`` buckets."""
        if not self.buckets:
            return 1.0
        return max((self.first + 1 + span) / BUCKETS_PER_S - now, 0.001)


class _State:
    """Counters of one scope. Limits are read from the request's Scope every time (they can
    change at runtime); only counts live here, plus what this scope's current Limits object
    implies (``_bind``: RPM/TPM as numbers, the budget in nano-USD, which counters apply), recomputed when the
    object changes, so the per-request path does no arithmetic on the limits."""

    __slots__ = ("budget", "counted", "ledger", "lim", "rpm", "running", "tpm", "window")

    def __init__(self) -> None:
        self.window = _Window()  # RPM and TPM; tokens are the estimate, corrected at settle
        # admitted request (by identity) -> lease end; insertion order is lease order
        self.running: dict[AdmitRequest, float] = {}
        self.ledger: _Ledger | None = None
        self.lim: Limits | None = None
        # RPM and TPM as numbers either way (_UNLIMITED when absent): one compare per request
        self.rpm = self.tpm = _UNLIMITED
        self.counted = False  # RPM or TPM applies: admissions are counted in the window
        self.budget: int | None = None  # nano-USD

    def _bind(self, lim: Limits) -> None:
        self.lim = lim
        self.rpm = _UNLIMITED if lim.rpm is None else lim.rpm
        self.tpm = _UNLIMITED if lim.tpm is None else lim.tpm
        self.counted = lim.rpm is not None or lim.tpm is not None
        self.budget = None if lim.budget_usd is None else round(lim.budget_usd * 1e9)

    def needs_ledger(self, lim: Limits, now: float) -> bool:
        """A budget applies but this process has not seeded the ledger of now's period yet."""
        return lim.budget_usd is not None and (self.ledger is None or not self.ledger.covers(lim.budget_period, now))

    def admit(self, lim: Limits, req: AdmitRequest, scope_id: str, span: int, lease: float) -> Decision | None:
        """Expire what left the window, then count ``req`` in and return None if it fits; else
        change nothing and return the refusal (UNSEEDED: the budget period's ledger must be
        seeded first). Check and count in one pass, since this runs for every scope of every
        request: every refusal comes before the first change. ``req.window_bucket`` is the
        request's own bucket (MemoryQuota.admit_now sets it); ``span`` is the window in buckets."""
        if lim is not self.lim:
            self._bind(lim)
        now, window = req.now, self.window
        if self.counted:
            # buckets before this one have left the window
            cutoff = req.window_bucket - span
            if window.first < cutoff:
                window.expire(cutoff)
            if window.requests >= self.rpm:
                return Decision(False, "rpm", scope_id, window.retry_after(now, span))
            if window.tokens + req.tokens > self.tpm:
                return Decision(False, "tpm", scope_id, window.retry_after(now, span))
        if lim.concurrency is not None and self._full(lim.concurrency, now):
            return Decision(False, "concurrency", scope_id, 1.0)
        refusal = self._reserve(lim, req, scope_id, lease)  # the last check, and the first change
        if refusal is not None:
            return refusal
        if self.counted:
            sums = window.buckets.get(bucket := req.window_bucket) or window.open(bucket)
            sums[0] += 1
            sums[1] += req.tokens
            window.requests += 1
            window.tokens += req.tokens
        if lim.concurrency is not None:
            self.running[req] = now + lease
        return None

    def _full(self, concurrency: int, now: float) -> bool:
        running = self.running
        while running:  # lease order: stop at the first lease still held
            oldest = next(iter(running))
            if running[oldest] > now:
                break
            del running[oldest]
        return len(running) >= concurrency

    def _reserve(self, lim: Limits, req: AdmitRequest, scope_id: str, lease: float) -> Decision | None:
        """Reserve the request's cost in the budget if it fits (None), else the refusal. ``lim``
        is bound (``admit``)."""
        budget, ledger, now = self.budget, self.ledger, req.now
        if budget is None:
            return None
        if ledger is None or not ledger.covers(lim.budget_period, now):
            return UNSEEDED
        if now >= ledger.next_expiry:
            ledger.purge(now)
        spent, cost = ledger.spent, req.cost_nusd
        if spent >= budget or spent + ledger.reserved_total + cost > budget:
            return Decision(False, "budget", scope_id, ledger.period.end - now)
        ledger.reserved[req] = (cost, now + lease)
        ledger.reserved_total += cost
        if now + lease < ledger.next_expiry:
            ledger.next_expiry = now + lease
        return None

    def undo(self, req: AdmitRequest) -> None:
        """Take back what ``admit`` counted for ``req`` just now (a later scope refused it; no
        await in between, so the window's buckets are those ``admit`` saw)."""
        self.running.pop(req, None)
        if self.counted:
            self.window.uncount(req.window_bucket, req.tokens)
        if self.ledger is not None and (reserved := self.ledger.reserved.pop(req, None)) is not None:
            self.ledger.reserved_total -= reserved[0]

    def finish(self, lim: Limits, req: AdmitRequest, tokens: int | None, cost_nusd: int) -> bool:
        """Undo the reservation, count the real use; True if spend crossed the soft alert.
        ``lim`` are the limits ``req`` was admitted under (its own Scope's): they may no longer
        be the scope's current ones, so nothing bound from the current ones is used here."""
        if self.running:
            self.running.pop(req, None)
        if lim.tpm is not None:  # the estimate becomes the real use (0 on release), while it counts
            window = self.window
            sums = window.buckets.get(req.window_bucket)
            if sums is not None:
                delta = max((tokens or 0) - req.tokens, -sums[1])
                sums[1] += delta
                window.tokens += delta
        ledger = self.ledger
        if lim.budget_usd is None or ledger is None:
            return False
        # A reservation still held in this ledger was made in it, so this is the admission's
        # period; otherwise (the lease expired, or the period ended and its ledger went) ask.
        reserved = ledger.reserved.pop(req, None)
        if reserved is not None:
            ledger.reserved_total -= reserved[0]
        elif not ledger.covers(lim.budget_period, req.now):
            return False  # the admission's period has ended: its reservation went with it
        if tokens is None:
            return False
        soft = round(lim.budget_usd * lim.soft_alert * 1e9)
        before = ledger.spent
        ledger.spent += cost_nusd
        return before < soft <= ledger.spent


class MemoryQuota:
    def __init__(self, load_spent: SpentLoader, lease: float = 600.0, *, window: float = WINDOW_S) -> None:
        self._span = round(window * BUCKETS_PER_S)  # the window in buckets
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
        """Each scope checks and counts the request in turn; a refusal takes back what the
        scopes before it counted. No await in between, so this is all or nothing (atomic on the
        event loop). None when a budget period has to be seeded from the database first."""
        scopes, states = req.scopes, self._scopes
        req.window_bucket = int(req.now * BUCKETS_PER_S)  # the bucket it counts in, and its settle corrects
        for scope in scopes:
            state = states.get(scope.id) or self._state(scope.id)
            refusal = state.admit(scope.limits, req, scope.id, self._span, self._lease)
            if refusal is not None:
                self._undo_before(scope, req)
                return self._refused(refusal, req)
        return ADMITTED

    def _undo_before(self, refusing: Scope, req: AdmitRequest) -> None:
        """All or nothing: take back the scopes that admitted ``req`` before ``refusing`` did not."""
        for scope in req.scopes:
            if scope is refusing:
                return
            self._scopes[scope.id].undo(req)

    def _refused(self, refusal: Decision, req: AdmitRequest) -> Decision | None:
        return None if refusal is UNSEEDED else refusal._replace(remaining=self._remaining(req), at=req.now)

    def _remaining(self, req: AdmitRequest) -> list[tuple[int | None, int | None]]:
        out: list[tuple[int | None, int | None]] = []
        for scope in req.scopes:
            state, lim = self._state(scope.id), scope.limits
            out.append((
                None if lim.rpm is None else max(lim.rpm - state.window.requests, 0),
                None if lim.tpm is None else max(lim.tpm - state.window.tokens, 0),
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
