"""A bounded sliding-window counter: ``buckets`` slots over ``window`` seconds.

Memory is fixed (two lists of ``buckets`` ints); time comes from an injectable clock so tests
can drive it. Single event loop: no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class WindowCounter:
    def __init__(self, window: float, buckets: int = 10, clock: Clock = time.monotonic) -> None:
        self._width = window / buckets
        self._counts = [0] * buckets
        self._stamps = [-1] * buckets
        self._clock = clock

    def _slot(self) -> int:
        tick = int(self._clock() / self._width)
        i = tick % len(self._counts)
        if self._stamps[i] != tick:
            self._stamps[i] = tick
            self._counts[i] = 0
        return i

    def add(self, n: int = 1) -> None:
        self._counts[self._slot()] += n

    def total(self) -> int:
        tick = int(self._clock() / self._width)
        oldest = tick - len(self._counts) + 1
        return sum(c for c, s in zip(self._counts, self._stamps, strict=True) if s >= oldest)
