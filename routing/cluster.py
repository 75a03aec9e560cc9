"""Live per-deployment statistics and the snapshots routers read.

``ClusterState`` is mutated only by the executor (start/finish of attempts) and by health
signals; routers only see immutable ``ClusterView`` snapshots. Single event loop: no locks.
Memory is bounded by the number of configured deployments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from routing.base import ClusterView, DeploymentState

EWMA_ALPHA = 0.2


@dataclass(slots=True)
class DeploymentStats:
    in_flight: int = 0
    ewma_latency_s: float | None = None
    successes: int = 0
    failures: int = 0
    ejected: bool = False

    def observe_latency(self, seconds: float) -> None:
        prev = self.ewma_latency_s
        self.ewma_latency_s = seconds if prev is None else prev + EWMA_ALPHA * (seconds - prev)


class ClusterState:
    def __init__(self, deployments: Iterable[str]) -> None:
        self.stats: dict[str, DeploymentStats] = {name: DeploymentStats() for name in deployments}

    def get(self, name: str) -> DeploymentStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = DeploymentStats()
        return stats

    def view(self, names: Iterable[str]) -> ClusterView:
        states = {}
        for name in names:
            s = self.get(name)
            states[name] = DeploymentState(
                name, available=not s.ejected, in_flight=s.in_flight, ewma_latency_s=s.ewma_latency_s,
            )
        return ClusterView(states)
