"""``least_loaded``: fewest requests in flight from this gateway first.

Ties rotate (a cursor offsets the order) so that an idle cluster still spreads load.
"""

from __future__ import annotations

from routing.base import ClusterView, RouteInput, RoutePlan, available


class LeastLoaded:
    def __init__(self) -> None:
        self._cursor = 0

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        names = available(inp, view)
        if not names:
            return RoutePlan(())
        self._cursor = (self._cursor + 1) % len(names)
        rotated = names[self._cursor:] + names[:self._cursor]
        return RoutePlan(tuple(sorted(rotated, key=lambda n: view.state(n).in_flight)))
