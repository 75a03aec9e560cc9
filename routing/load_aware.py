"""``load_aware``: least upstream load from vLLM's own gauges.

Score = ``4 * waiting + running + in_flight`` (+ a penalty above 90% KV-cache use), where
``waiting``/``running`` come from fresh /metrics samples (routing/load.py) and ``in_flight``
is this gateway's own count, which moves between polls and so keeps one poll interval from
sending everything to the same deployment. Without fresh data a deployment scores on
``in_flight`` alone. Ties rotate.
"""

from __future__ import annotations

from routing.base import ClusterView, DeploymentState, RouteInput, RoutePlan, available

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
        self._cursor = 0

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        names = available(inp, view)
        if not names:
            return RoutePlan(())
        self._cursor = (self._cursor + 1) % len(names)
        rotated = names[self._cursor:] + names[:self._cursor]
        return RoutePlan(tuple(sorted(rotated, key=lambda n: load_score(view.state(n)))))
