"""Circuit breakers, one per deployment, on pybreaker.

A breaker opens after ``failures`` consecutive failures (errors the classifier calls the
deployment's fault: timeouts, 5xx, 429, resets; never client errors, deadlines or
cancellation). While open the deployment is unavailable to every router. After ``reset``
seconds exactly one probe request is let through (half-open): success closes the breaker,
failure opens it again. ``guard`` is used as ``with breakers.guard(name): await ...``;
``run(name, call)`` is the same with a fast path for the common case (closed, no failures
counted): pybreaker's generator context manager and lock are skipped, and a failure is fed
into pybreaker through its public ``call`` so that pybreaker stays the only state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal, NoReturn, TypeVar

import pybreaker

from configs.resilience import BreakerPolicy
from routing.errors import BreakerOpen

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half_open"]
IsFailure = Callable[[BaseException], bool]


class Breakers:
    def __init__(self, policies: Mapping[str, BreakerPolicy], is_failure: IsFailure) -> None:
        self._policies = dict(policies)
        self._is_failure = is_failure
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._probing: set[str] = set()
        for name in policies:
            self._get(name)

    def _get(self, name: str) -> pybreaker.CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            policy = self._policies.get(name) or BreakerPolicy()
            breaker = pybreaker.CircuitBreaker(
                fail_max=policy.failures, reset_timeout=policy.reset, name=name,
                exclude=[self._excluded],
                throw_new_error_on_trip=False,
            )
            self._breakers[name] = breaker
        return breaker

    def _excluded(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncio.CancelledError) or not self._is_failure(exc)

    def state(self, name: str) -> BreakerState:
        state = self._get(name).current_state
        if state == pybreaker.STATE_OPEN:
            return "open"
        return "half_open" if state == pybreaker.STATE_HALF_OPEN else "closed"

    def _reset_due(self, breaker: pybreaker.CircuitBreaker) -> bool:
        opened = breaker._state_storage.opened_at  # pybreaker keeps no public accessor
        return opened is None or datetime.now(UTC) >= opened + timedelta(seconds=breaker.reset_timeout)

    def available(self, name: str) -> bool:
        breaker = self._get(name)
        state = breaker.current_state
        if state == pybreaker.STATE_CLOSED:
            return True
        if name in self._probing:
            return False
        return state == pybreaker.STATE_HALF_OPEN or self._reset_due(breaker)

    @contextlib.contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """Run one call under the breaker; raises BreakerOpen when it may not run now."""
        breaker = self._get(name)
        probe = breaker.current_state != pybreaker.STATE_CLOSED
        if probe and not self.available(name):
            raise BreakerOpen(name)
        if probe:
            self._probing.add(name)
        try:
            with breaker.calling():
                yield
        except pybreaker.CircuitBreakerError:
            raise BreakerOpen(name) from None
        finally:
            if probe:
                self._probing.discard(name)

    async def run(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        breaker = self._get(name)
        if breaker.current_state != pybreaker.STATE_CLOSED or breaker.fail_counter:
            with self.guard(name):
                return await call()
        try:
            value = await call()
        except Exception as exc:
            self._record_failure(breaker, exc)
            raise
        if self.failures(name):  # a concurrent failure was counted meanwhile: success resets it
            breaker.call(_noop)
        return value

    def _record_failure(self, breaker: pybreaker.CircuitBreaker, exc: Exception) -> None:
        """Let pybreaker classify and count ``exc`` (excluded errors reset, failures count
        and may open the breaker); it re-raises, which the caller does itself."""
        def reraise() -> NoReturn:
            raise exc

        try:
            breaker.call(reraise)
        except Exception:  # pybreaker re-raises exc (or CircuitBreakerError on a trip)
            return

    def states(self) -> dict[str, BreakerState]:
        """Every deployment's breaker state (for the status endpoint and /metrics)."""
        return {name: self.state(name) for name in self._breakers}

    def failures(self, name: str) -> int:
        return int(self._get(name).fail_counter)


def _noop() -> None:
    return None
