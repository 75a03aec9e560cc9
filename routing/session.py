"""``session``: a session key (``x-turnout-session`` header or the OpenAI ``user`` field) sticks
to one deployment, by consistent hashing.

Each deployment owns ``VNODES`` points on a 64-bit ring; a key goes to the first point at or
after its hash, skipping unavailable deployments. Adding or removing one deployment of N
moves about 1/N of the sessions. Rings are cached per deployment set (bounded: one per
distinct tuple, in practice one per model). Requests without a key go round robin.
"""

from __future__ import annotations

import bisect
import hashlib

from routing.balancers import RoundRobin
from routing.base import ClusterView, RouteInput, RoutePlan

VNODES = 64
_MAX_RINGS = 64


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, names: tuple[str, ...], vnodes: int = VNODES) -> None:
        points = sorted((_hash(f"{name}#{i}"), name) for name in names for i in range(vnodes))
        self._keys = [p for p, _ in points]
        self._names = [n for _, n in points]
        self._distinct = len(set(names))

    def walk(self, key: str) -> list[str]:
        """Distinct deployments in ring order starting at the key's position."""
        if not self._keys:
            return []
        start = bisect.bisect_left(self._keys, _hash(key)) % len(self._keys)
        seen: list[str] = []
        for i in range(len(self._keys)):
            name = self._names[(start + i) % len(self._keys)]
            if name not in seen:
                seen.append(name)
                if len(seen) == self._distinct:
                    break
        return seen


class Session:
    def __init__(self) -> None:
        self._rings: dict[tuple[str, ...], HashRing] = {}
        self._fallback = RoundRobin()

    def ring(self, names: tuple[str, ...]) -> HashRing:
        ring = self._rings.get(names)
        if ring is None:
            if len(self._rings) >= _MAX_RINGS:
                self._rings.clear()
            ring = self._rings[names] = HashRing(names)
        return ring

    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan:
        if inp.session_key is None:
            return self._fallback.plan(inp, view)
        order = self.ring(inp.deployments).walk(inp.session_key)
        return RoutePlan(tuple(n for n in order if view.state(n).available))
