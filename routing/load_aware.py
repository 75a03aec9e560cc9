"""``load_aware``: least upstream load from vLLM's own gauges.

Score = ``4 * waiting + running + in_flight`` (+ a penalty above 90% KV-cache use), where
``waiting``/``running`` come from fresh /metrics samples (routing/load.py) and ``in_flight``
is this gateway's own count, which moves between polls and so keeps one poll interval from
sending everything to the same deployment. Without fresh data a deployment scores on
``in_flight`` alone. Ties rotate.
"""

from __future__ import annotations

from routing.base import ClusterView, DeploymentState, Rotation, RouteInput, RoutePlan

WAITING_WEIGHT = 4.0
KV_PRESSURE = 0.9
KV_PENALTY = 50.0


def load_score(s: DeploymentState) -> float:
    value = float(s.in_flight)
    if s.waiting is not None:
        value += WAITING_WEIGHT * s.waiting
    if s.running is not None:
        value += s.running
    if s.kv_cache_usage is not None and s.kv_cache_usage > KV_PRESSURE:
        value += KV_PENALTY * (s.kv_cache_usage - KV_PRESSURE) / (1 - KV_PRESSURE)
    return value


class LoadAware:
    def __init__(self) -> None:
        self._rotation = Rotation()

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        return RoutePlan(tuple(sorted(self._rotation.next(inp, view), key=lambda n: load_score(view.state(n)))))
