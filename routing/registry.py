"""Balancing strategy name → router factory. One router instance per model alias."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from routing.balancers import RoundRobin, Weighted
from routing.base import Router

ROUTERS: Mapping[str, Callable[[], Router]] = {
    "round_robin": RoundRobin,
    "weighted": Weighted,
}


def build_router(strategy: str) -> Router:
    factory = ROUTERS.get(strategy)
    if factory is None:
        raise ValueError(f"unknown balancing strategy {strategy!r}")
    return factory()
