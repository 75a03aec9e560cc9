"""Deployment health: passive outlier ejection and optional active probes.

``Outlier`` watches one deployment's outcomes over a sliding window and ejects it for
``eject`` seconds when its error rate passes the threshold (Envoy's outlier detection); it is
the error-rate complement of the breaker's consecutive-failure rule.

``probe_loop`` runs in a background task owned by the gateway's runtime: every ``interval`` it
calls ``check(name)`` (the backend's ``health()``) for each deployment and records the answer;
a failed or slow probe marks the deployment unavailable until a probe succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from configs.resilience import OutlierPolicy, ProbePolicy
from routing.windows import Clock, WindowCounter

log = logging.getLogger("turnout.health")
Check = Callable[[str], Awaitable[bool]]


class Outlier:
    def __init__(self, policy: OutlierPolicy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._ok = WindowCounter(policy.window, clock=clock)
        self._failed = WindowCounter(policy.window, clock=clock)
        self.ejected_until = 0.0
        self.ejections = 0

    def record(self, ok: bool) -> None:
        (self._ok if ok else self._failed).add()
        if ok:
            return
        failed, total = self._failed.total(), self._ok.total() + self._failed.total()
        if total >= self.policy.min_requests and failed / total > self.policy.error_rate and not self.ejected:
            self.ejected_until = self._clock() + self.policy.eject
            self.ejections += 1
            self._ok = WindowCounter(self.policy.window, clock=self._clock)
            self._failed = WindowCounter(self.policy.window, clock=self._clock)

    @property
    def ejected(self) -> bool:
        return self._clock() < self.ejected_until


class ProbeResults:
    """Latest probe answer per deployment; deployments never probed count as healthy."""

    def __init__(self) -> None:
        self._down: set[str] = set()
        self.probes = 0

    def set(self, name: str, ok: bool) -> None:
        self.probes += 1
        if ok:
            self._down.discard(name)
        else:
            self._down.add(name)

    def healthy(self, name: str) -> bool:
        return name not in self._down


async def probe_once(names: Iterable[str], check: Check, policy: ProbePolicy, results: ProbeResults) -> None:
    async def one(name: str) -> None:
        try:
            async with asyncio.timeout(policy.timeout):
                ok = await check(name)
        except TimeoutError:
            ok = False
        except Exception:  # a broken probe is a failed probe, never a dead loop
            log.exception("health probe for %s failed", name)
            ok = False
        results.set(name, ok)

    await asyncio.gather(*(one(n) for n in names))


async def probe_loop(names: tuple[str, ...], check: Check, policy: ProbePolicy, results: ProbeResults) -> None:
    """Probe forever; cancelled by the runtime on close."""
    while True:
        await probe_once(names, check, policy, results)
        await asyncio.sleep(policy.interval)
