"""Live per-deployment state and the snapshots routers read.

``ClusterState`` is mutated by the executor (start/finish of attempts), by the breakers, by
passive outlier ejection and by the background probe and load-poll tasks; routers only see
immutable ``ClusterView`` snapshots. A deployment is available when its breaker lets calls
through, it is not ejected, and its last active probe (if any) passed. Single event loop: no
locks. Memory is bounded by the number of configured deployments (and a fixed-size sample
ring each).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from configs.resilience import BreakerPolicy, LoadPolicy, OutlierPolicy
from routing.base import ClusterView, DeploymentState
from routing.breaker import Breakers
from routing.health import Outlier, ProbeResults
from routing.load import LoadSample

EWMA_ALPHA = 0.2
SAMPLES = 256


@dataclass(slots=True)
class DeploymentStats:
    in_flight: int = 0
    ewma_latency_s: float | None = None
    successes: int = 0
    failures: int = 0
    ejected: bool = False  # set by an operator (drain); outlier ejection is separate
    outlier: Outlier | None = None
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    _q: float = 0.0
    _q_value: float | None = None
    _q_at: int = 0

    def observe_latency(self, seconds: float) -> None:
        prev = self.ewma_latency_s
        self.ewma_latency_s = seconds if prev is None else prev + EWMA_ALPHA * (seconds - prev)
        self.samples.append(seconds)

    def quantile(self, q: float, min_samples: int) -> float | None:
        """Quantile ``q`` of recent attempt latencies (time to first token for streams);
        recomputed every 16 samples so the sort stays off most requests. None (the caller's
        fallback) until there are ``min_samples`` and enough that about two should lie above
        the quantile (2 / (1 - q): 200 for p99; at most the SAMPLES kept): a "p99" of 20
        samples is their maximum, which misses a 5% tail in a third of all warm-ups, and a
        hedge delay set from it spends the hedge budget on requests that were never slow."""
        if len(self.samples) < max(min_samples, min(SAMPLES, math.ceil(2 / (1 - q) - 1e-9))):
            return None
        if self._q_value is None or self._q != q or self.successes - self._q_at >= 16:
            ordered = sorted(self.samples)
            self._q, self._q_at = q, self.successes
            self._q_value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
        return self._q_value

    @property
    def outlier_ejected(self) -> bool:
        return self.outlier is not None and self.outlier.ejected


class ClusterState:
    def __init__(
        self, deployments: Iterable[str], *, breakers: Mapping[str, BreakerPolicy] | None = None,
        outliers: Mapping[str, OutlierPolicy | None] | None = None, load: LoadPolicy | None = None,
        is_failure: Callable[[BaseException], bool] = lambda exc: True,
    ) -> None:
        names = list(deployments)
        self.stats: dict[str, DeploymentStats] = {}
        self.breakers = Breakers(breakers or {n: BreakerPolicy() for n in names}, is_failure)
        self.is_failure = is_failure
        self.probes = ProbeResults()
        self.loads: dict[str, LoadSample] = {}
        self.load_stale = (load or LoadPolicy()).stale
        outliers = outliers or {}
        for name in names:
            policy = outliers.get(name)
            self.stats[name] = DeploymentStats(outlier=Outlier(policy) if policy else None)

    def get(self, name: str) -> DeploymentStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = DeploymentStats()
        return stats

    def available(self, name: str) -> bool:
        s = self.get(name)
        return (not s.ejected and not s.outlier_ejected and self.probes.healthy(name)
                and self.breakers.available(name))

    def fresh_load(self, name: str) -> LoadSample | None:
        sample = self.loads.get(name)
        if sample is None or time.monotonic() - sample.at > self.load_stale:
            return None
        return sample

    def view(self, names: Iterable[str]) -> ClusterView:
        states = {}
        for name in names:
            s = self.get(name)
            load = self.fresh_load(name)
            states[name] = DeploymentState(
                name, available=self.available(name), in_flight=s.in_flight, ewma_latency_s=s.ewma_latency_s,
                waiting=load.waiting if load else None, running=load.running if load else None,
                kv_cache_usage=load.kv_cache_usage if load else None,
            )
        return ClusterView(states)

    def record(self, name: str, exc: BaseException | None, seconds: float) -> None:
        """One finished attempt: success (exc None) or an error (cancellations: record_unfinished)."""
        s = self.get(name)
        if exc is None:
            s.successes += 1
            s.observe_latency(seconds)
        elif self.is_failure(exc):
            s.failures += 1
        else:
            return
        if s.outlier is not None:
            s.outlier.record(exc is None)

    def record_unfinished(self, name: str, seconds: float) -> None:
        """An attempt cancelled after ``seconds`` (it lost a hedge race, or its client left):
        neither a success nor a failure, but its latency was at least ``seconds``, so it joins
        the quantile samples as that lower bound. Without it a hedge delay learns only from the
        attempts it did not hedge: a slow tail that hedging cuts off vanishes from the samples,
        the delay sinks to the fast requests' quantile, and the hedge budget goes to requests
        that were never slow while the slow ones wait unhedged."""
        self.get(name).samples.append(seconds)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per deployment: breaker, availability, counters, latency, load (status endpoint)."""
        out: dict[str, dict[str, Any]] = {}
        for name, s in self.stats.items():
            load = self.fresh_load(name)
            out[name] = {
                "available": self.available(name), "breaker": self.breakers.state(name),
                "consecutive_failures": self.breakers.failures(name), "in_flight": s.in_flight,
                "successes": s.successes, "failures": s.failures, "ewma_latency_s": s.ewma_latency_s,
                "p95_latency_s": s.quantile(0.95, 1), "outlier_ejected": s.outlier_ejected,
                "probe_ok": self.probes.healthy(name),
                "load": None if load is None else {
                    "waiting": load.waiting, "running": load.running, "kv_cache_usage": load.kv_cache_usage,
                },
            }
        return out
