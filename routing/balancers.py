"""Simple balancing strategies: round robin and weighted random.

Each returns the whole list of available deployments, best first, so that the executor can
retry on the next one without asking again.
"""

from __future__ import annotations

import random

from routing.base import ClusterView, Rotation, RouteInput, RoutePlan, available


class RoundRobin:
    def __init__(self) -> None:
        self._rotation = Rotation()

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        return RoutePlan(tuple(self._rotation.next(inp, view)))


class Weighted:
    """Weighted random without replacement (weights from the model's deployments)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        weights = dict(zip(inp.deployments, inp.weights or (1.0,) * len(inp.deployments), strict=True))
        pool = [(name, weights[name]) for name in available(inp, view)]
        order: list[str] = []
        while pool:
            total = sum(w for _, w in pool)
            if total <= 0:
                order.extend(name for name, _ in pool)
                break
            pick = self._rng.uniform(0, total)
            for i, (name, weight) in enumerate(pool):
                pick -= weight
                if pick <= 0 or i == len(pool) - 1:
                    order.append(name)
                    pool.pop(i)
                    break
        return RoutePlan(tuple(order))
