"""An exact log of admissions to hold a bucketed RPM window to (MemoryQuota and RedisQuota
count in buckets): every admission is one an exact sliding window would admit too, every
refusal happens only when the window widened by one bucket is full, and no window ever holds
more than the limit."""

from __future__ import annotations

import bisect

from admin.quota import WINDOW_S, Decision


class ExactLog:
    def __init__(self, limit: int, bucket_s: float) -> None:
        self.limit = limit
        self.bucket_s = bucket_s
        self.admitted: list[float] = []  # times, ascending

    def check(self, now: float, decision: Decision) -> None:
        admitted = self.admitted
        in_window = len(admitted) - bisect.bisect_right(admitted, now - WINDOW_S)
        in_window_and_bucket = len(admitted) - bisect.bisect_left(admitted, now - WINDOW_S - self.bucket_s)
        if decision.ok:
            assert in_window < self.limit  # an exact log would admit it too
            admitted.append(now)
        else:
            assert in_window_and_bucket >= self.limit  # never stricter than one bucket more
            assert 0 < decision.retry_after <= WINDOW_S + self.bucket_s

    def assert_never_over_the_limit(self) -> None:
        admitted = self.admitted
        for i, t in enumerate(admitted):  # every window holds at most the limit
            assert bisect.bisect_left(admitted, t + WINDOW_S) - i <= self.limit
