"""``prefix_affinity``: requests sharing a prompt prefix go to the same deployment while it is
available, so its KV cache (vLLM prefix caching) is reused.

The table maps ``prefix_key`` → deployment in a bounded LRU (``table_size`` entries, oldest
evicted first). A new prefix, or one whose deployment is unavailable, is placed on the least
loaded available deployment and remembered. Requests without a prefix key are balanced by
least in-flight. The rest of the plan (for retries) is ordered by in-flight.
"""

from __future__ import annotations

from collections import OrderedDict

from routing.base import ClusterView, RouteInput, RoutePlan
from routing.least_loaded import LeastLoaded


class PrefixAffinity:
    def __init__(self, table_size: int = 10_000) -> None:
        self.table_size = table_size
        self.table: OrderedDict[str, str] = OrderedDict()
        self._spread = LeastLoaded()

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        ordered = self._spread.plan(inp, view).candidates
        key = inp.prefix_key
        if key is None or not ordered:
            return RoutePlan(ordered)
        sticky = self.table.get(key)
        if sticky is not None and sticky in ordered:
            self.table.move_to_end(key)
        else:
            sticky = ordered[0]
            self.table[key] = sticky
            self.table.move_to_end(key)
            while len(self.table) > self.table_size:
                self.table.popitem(last=False)
        return RoutePlan((sticky, *(n for n in ordered if n != sticky)))


