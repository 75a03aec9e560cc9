"""``latency``: power of two choices over an EWMA of attempt latency.

Two random available deployments are compared on ``ewma * (in_flight + 1)``; the better one
goes first. A deployment with no latency yet scores 0 so it gets explored. The rest follow by
score, for retries. P2C avoids the herd that "always the fastest" causes between updates.
"""

from __future__ import annotations

import random

from routing.base import ClusterView, DeploymentState, RouteInput, RoutePlan, available


def score(state: DeploymentState) -> float:
    return (state.ewma_latency_s or 0.0) * (state.in_flight + 1)


class Latency:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        names = available(inp, view)
        if len(names) <= 1:
            return RoutePlan(tuple(names))
        a, b = self._rng.sample(names, 2)
        first = a if score(view.state(a)) <= score(view.state(b)) else b
        rest = sorted((n for n in names if n != first), key=lambda n: score(view.state(n)))
        return RoutePlan((first, *rest))
