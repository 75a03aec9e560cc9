"""Per-model resilience settings: retries, retry budget, circuit breaker, outlier ejection,
active health probes, hedged requests, vLLM load polling, affinity and fallback rules.

Every default lives in the dataclasses below (the one place); a model's YAML overrides any
subset. Keys read from a model's mapping (see docs/resilience.md)::

    retry:    {backoff: 25ms, backoff_max: 1s, budget: 0.2, min_retries: 100, window: 10s}
    breaker:  {failures: 5, reset: 5s}
    outlier:  {window: 10s, min_requests: 20, error_rate: 0.5, eject: 10s}   # or false
    health:   {interval: 5s, timeout: 2s}                                    # optional probes
    hedge:    {after: p95 | p99 | 150ms, budget: 0.1, max_delay: 1s, min_samples: 20}
    load:     {interval: 1s, stale: 5s}                                      # load_aware
    affinity: {table_size: 10000, prefix_chars: 512}
    fallbacks: [big, {model: bigger, on: [context_length, 5xx]}]

A plain fallback name means "on any retryable error".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, cast

from configs.reader import Reader

FallbackOn = Literal["timeout", "server", "rate_limit", "context_length", "content_filter"]
FALLBACK_CLASSES: tuple[FallbackOn, ...] = ("timeout", "server", "rate_limit", "context_length", "content_filter")
_ALIASES: dict[str, FallbackOn] = {"5xx": "server", "429": "rate_limit", "context_length_exceeded": "context_length"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff before retry n (from 0) is uniform(0, min(backoff_max, backoff * 2**n)) (full
    jitter). Retries are allowed while retries in the last ``window`` seconds stay below
    ``max(min_retries, budget * requests in the window)``."""

    backoff: float = 0.025
    backoff_max: float = 1.0
    budget: float = 0.2
    min_retries: int = 100  # per window: 10 retries/s like Finagle's RetryBudget floor
    window: float = 10.0

    def __post_init__(self) -> None:
        if self.backoff < 0 or self.backoff_max < self.backoff or self.window <= 0 or self.budget < 0:
            raise ValueError("retry: need 0 <= backoff <= backoff_max, budget >= 0, window > 0")


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Opens after ``failures`` consecutive failures; one probe call is let through after
    ``reset`` seconds (half-open); a success closes it, a failure opens it again."""

    failures: int = 5
    reset: float = 5.0


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Passive ejection: a deployment whose error rate over ``window`` exceeds ``error_rate``
    (with at least ``min_requests``) is skipped for ``eject`` seconds."""

    window: float = 10.0
    min_requests: int = 20
    error_rate: float = 0.5
    eject: float = 10.0


@dataclass(frozen=True, slots=True)
class ProbePolicy:
    """Active probes: ``backend.health()`` every ``interval``; a failed probe marks the
    deployment unavailable until a probe succeeds."""

    interval: float = 5.0
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """After ``delay`` seconds (or the primary's observed ``quantile`` (p95) time to first token
    when ``delay`` is None, capped by ``max_delay``; ``max_delay`` until ``min_samples`` are seen)
    a duplicate goes to the next deployment, while hedges stay under ``budget`` of requests."""

    delay: float | None = None
    quantile: float = 0.95  # with delay None: hedge after this quantile of the primary's TTFT
    budget: float = 0.1
    max_delay: float = 1.0
    min_samples: int = 20


@dataclass(frozen=True, slots=True)
class LoadPolicy:
    """vLLM /metrics polling for ``load_aware``: every ``interval``; older than ``stale`` is ignored."""

    interval: float = 1.0
    stale: float = 5.0


@dataclass(frozen=True, slots=True)
class AffinityPolicy:
    """``prefix_affinity``/``session``: table bound and how much of a prompt forms its key."""

    table_size: int = 10_000
    prefix_chars: int = 512


@dataclass(frozen=True, slots=True)
class FallbackRule:
    """Go to ``model`` when the chain so far failed with an error class in ``on`` (empty: any
    retryable class)."""

    model: str
    on: frozenset[FallbackOn] = frozenset()

    def matches(self, error_class: str) -> bool:
        return not self.on or error_class in self.on


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    outlier: OutlierPolicy | None = field(default_factory=OutlierPolicy)
    health: ProbePolicy | None = None
    hedge: HedgePolicy | None = None
    load: LoadPolicy = field(default_factory=LoadPolicy)
    affinity: AffinityPolicy = field(default_factory=AffinityPolicy)
    fallbacks: tuple[FallbackRule, ...] = ()


DEFAULT_RESILIENCE = ResilienceConfig()


def parse_resilience(r: Reader) -> ResilienceConfig:
    """Read the resilience keys of one model's mapping (the caller finishes ``r``)."""
    return ResilienceConfig(
        retry=_retry(r.section("retry")),
        breaker=_breaker(r.section("breaker")),
        outlier=_outlier(r),
        health=_probe(r.section("health")),
        hedge=_hedge(r.section("hedge")),
        load=_load(r.section("load")),
        affinity=_affinity(r.section("affinity")),
        fallbacks=parse_fallbacks(r),
    )


def _retry(r: Reader | None) -> RetryPolicy:
    if r is None:
        return RetryPolicy()
    d = RetryPolicy()
    policy = RetryPolicy(
        backoff=r.duration("backoff", d.backoff), backoff_max=r.duration("backoff_max", d.backoff_max),
        budget=r.float("budget", d.budget, min_value=0), min_retries=r.int("min_retries", d.min_retries, min_value=0),
        window=r.duration("window", d.window),
    )
    r.finish()
    return policy


def _breaker(r: Reader | None) -> BreakerPolicy:
    if r is None:
        return BreakerPolicy()
    d = BreakerPolicy()
    policy = BreakerPolicy(r.int("failures", d.failures, min_value=1), r.duration("reset", d.reset))
    r.finish()
    return policy


def _outlier(model: Reader) -> OutlierPolicy | None:
    raw = model.raw("outlier", None)
    if raw is False:
        return None
    if raw is None:
        return OutlierPolicy()
    r = Reader(raw, model.sub_path("outlier"), model.source)
    d = OutlierPolicy()
    policy = OutlierPolicy(
        window=r.duration("window", d.window), min_requests=r.int("min_requests", d.min_requests, min_value=1),
        error_rate=r.float("error_rate", d.error_rate, min_value=0, max_value=1), eject=r.duration("eject", d.eject),
    )
    r.finish()
    return policy


def _probe(r: Reader | None) -> ProbePolicy | None:
    if r is None:
        return None
    d = ProbePolicy()
    policy = ProbePolicy(r.duration("interval", d.interval), r.duration("timeout", d.timeout))
    r.finish()
    return policy


def _hedge(r: Reader | None) -> HedgePolicy | None:
    if r is None:
        return None
    d = HedgePolicy()
    after = r.raw("after", "p95")
    delay, quantile = None, d.quantile
    if isinstance(after, str) and after.startswith("p") and after[1:].replace(".", "", 1).isdigit():
        quantile = float(after[1:]) / 100
        if not 0.5 <= quantile < 1:
            raise r.error("after", f"expected a quantile from p50 to p99.9 or a duration; got {after!r}")
    else:
        delay = r.duration("after")
    policy = HedgePolicy(
        delay=delay, quantile=quantile, budget=r.float("budget", d.budget, min_value=0, max_value=1),
        max_delay=r.duration("max_delay", d.max_delay), min_samples=r.int("min_samples", d.min_samples, min_value=1),
    )
    r.finish()
    return policy


def _load(r: Reader | None) -> LoadPolicy:
    if r is None:
        return LoadPolicy()
    d = LoadPolicy()
    policy = LoadPolicy(r.duration("interval", d.interval), r.duration("stale", d.stale))
    r.finish()
    return policy


def _affinity(r: Reader | None) -> AffinityPolicy:
    if r is None:
        return AffinityPolicy()
    d = AffinityPolicy()
    policy = AffinityPolicy(
        r.int("table_size", d.table_size, min_value=1), r.int("prefix_chars", d.prefix_chars, min_value=1),
    )
    r.finish()
    return policy


def parse_fallbacks(r: Reader) -> tuple[FallbackRule, ...]:
    raw = r.raw("fallbacks", [])
    if not isinstance(raw, list):
        raise r.error("fallbacks", "expected a list of model names or {model, on} mappings")
    rules = []
    for i, item in enumerate(raw):
        if isinstance(item, str) and item:
            rules.append(FallbackRule(item))
            continue
        if isinstance(item, dict) and True in item:  # YAML 1.1 reads a bare `on` key as true
            item = {("on" if k is True else k): v for k, v in item.items()}
            if isinstance(item["on"], list):  # and `429` as an int
                item["on"] = [str(v) if isinstance(v, int) else v for v in item["on"]]
        f = Reader(item, f"{r.sub_path('fallbacks')}[{i}]", r.source)
        on = f.str_list("on", ())
        classes = []
        for name in on:
            cls = _ALIASES.get(name, name)
            if cls not in FALLBACK_CLASSES:
                allowed = ", ".join((*FALLBACK_CLASSES, "5xx", "429"))
                raise f.error("on", f"expected error classes from {allowed}; got {name!r}")
            classes.append(cast(FallbackOn, cls))
        rules.append(FallbackRule(f.str("model"), frozenset(classes)))
        f.finish()
    return tuple(rules)
