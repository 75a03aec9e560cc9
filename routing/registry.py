"""Balancing strategy name → router factory. One router instance per model alias; a factory
receives the model's resilience settings (table sizes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from configs.resilience import DEFAULT_RESILIENCE, ResilienceConfig
from routing.balancers import RoundRobin, Weighted
from routing.base import Router
from routing.latency import Latency
from routing.least_loaded import LeastLoaded
from routing.load_aware import LoadAware
from routing.prefix_affinity import PrefixAffinity
from routing.session import Session

ROUTERS: Mapping[str, Callable[[ResilienceConfig], Router]] = {
    "round_robin": lambda _: RoundRobin(),
    "weighted": lambda _: Weighted(),
    "least_loaded": lambda _: LeastLoaded(),
    "latency": lambda _: Latency(),
    "load_aware": lambda _: LoadAware(),
    "prefix_affinity": lambda cfg: PrefixAffinity(cfg.affinity.table_size),
    "session": lambda _: Session(),
}


def build_router(strategy: str, cfg: ResilienceConfig = DEFAULT_RESILIENCE) -> Router:
    factory = ROUTERS.get(strategy)
    if factory is None:
        raise ValueError(f"unknown balancing strategy {strategy!r}")
    return factory(cfg)
