"""``least_loaded``: fewest requests in flight from this gateway first.

Ties rotate (a cursor offsets the order) so that an idle cluster still spreads load.
"""

from __future__ import annotations

from routing.base import ClusterView, Rotation, RouteInput, RoutePlan


class LeastLoaded:
    def __init__(self) -> None:
        self._rotation = Rotation()

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        return RoutePlan(tuple(sorted(self._rotation.next(inp, view), key=lambda n: view.state(n).in_flight)))
