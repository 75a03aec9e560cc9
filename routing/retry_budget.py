"""Retry and hedge budgets: extra attempts stay a bounded fraction of real requests, so that
retries cannot multiply an outage (Finagle's RetryBudget, Envoy's retry_budget).

``RetryBudget.try_spend()`` answers and, when yes, counts the retry; callers record every
request with ``request()``. ``backoff(n)`` is full jitter: uniform(0, min(cap, base * 2**n)).
"""

from __future__ import annotations

import random
import time

from configs.resilience import RetryPolicy
from routing.windows import Clock, WindowCounter


class Budget:
    """Extra work allowed while extra < max(floor, ratio * requests) over the window."""

    def __init__(self, ratio: float, floor: int, window: float, clock: Clock = time.monotonic) -> None:
        self.ratio = ratio
        self.floor = floor
        self._requests = WindowCounter(window, clock=clock)
        self._spent = WindowCounter(window, clock=clock)

    def request(self) -> None:
        self._requests.add()

    def try_spend(self) -> bool:
        allowed = max(float(self.floor), self.ratio * self._requests.total())
        if self._spent.total() >= allowed:
            return False
        self._spent.add()
        return True

    def snapshot(self) -> dict[str, float]:
        return {"requests": self._requests.total(), "spent": self._spent.total(), "ratio": self.ratio}


class RetryBudget(Budget):
    def __init__(self, policy: RetryPolicy, clock: Clock = time.monotonic, rng: random.Random | None = None) -> None:
        super().__init__(policy.budget, policy.min_retries, policy.window, clock)
        self.policy = policy
        self._rng = rng or random.Random()

    def backoff(self, retry: int) -> float:
        cap = min(self.policy.backoff_max, self.policy.backoff * (2 ** min(retry, 30)))
        return self._rng.uniform(0.0, cap)
