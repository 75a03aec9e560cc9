"""The router contract: a pure, synchronous selector.

``Router.plan(inp, view)`` orders a model's deployments for one request. It does no I/O and
never blocks; state it keeps (a round-robin cursor, an affinity table) is bounded. The
executor (executor.py) runs the attempts the plan describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RouteInput:
    model: str
    deployments: tuple[str, ...]
    weights: tuple[float, ...] = ()
    session_key: str | None = None  # sticky-session key (header or OpenAI `user`)
    prefix_key: str | None = None  # hash of the prompt prefix, for KV-cache affinity


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """A snapshot of one deployment as routers see it."""

    name: str
    available: bool = True  # false when ejected or its breaker is open
    in_flight: int = 0
    ewma_latency_s: float | None = None
    waiting: float | None = None  # upstream queue (vLLM), fresh data only
    running: float | None = None
    kv_cache_usage: float | None = None


@dataclass(frozen=True, slots=True)
class ClusterView:
    deployments: Mapping[str, DeploymentState] = field(default_factory=dict)

    def state(self, name: str) -> DeploymentState:
        return self.deployments.get(name) or DeploymentState(name)


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Deployments in the order they should be tried; unavailable ones are already removed."""

    candidates: tuple[str, ...]


class Router(Protocol):
    def plan(self, inp: RouteInput, view: ClusterView) -> RoutePlan: ...


def available(inp: RouteInput, view: ClusterView) -> list[str]:
    return [d for d in inp.deployments if view.state(d).available]


class Rotation:
    """The available deployments, starting one further along on each call. Round robin uses it
    as is; scored strategies sort its output (a stable sort), so equal scores rotate too."""

    def __init__(self) -> None:
        self._cursor = 0

    def next(self, inp: RouteInput, view: ClusterView) -> list[str]:
        names = available(inp, view)
        if names:
            start = self._cursor % len(names)
            self._cursor = (self._cursor + 1) % 1_000_000_007
            names = names[start:] + names[:start]
        return names
