"""Prometheus metrics with a cheap hot path.

Contract: a request costs one dict lookup and a handful of integer/float additions on plain
Python objects (``Recorder.record``, ~1 µs). prometheus-client objects are touched only by
``Recorder.flush``, which pushes the accumulated deltas into them: before every scrape of
this process and every ``flush_interval`` from a background task (so with several workers,
each one's numbers reach the shared ``PROMETHEUS_MULTIPROC_DIR`` files within that interval).
Single event loop: no locks.

Cardinality is bounded: model and deployment labels come from the config (unknown models are
``none``), status is an HTTP code, and the tenant label is one of a configured set or the first
``max_tenants`` tenants seen; every other tenant is ``other``.

Histogram deltas are written into the client's bucket values directly (``_buckets``/``_sum``),
since prometheus-client has no batch-observe API; tests/gateway/test_metrics.py pins the
resulting exposition so an upgrade that changes those internals fails loudly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backends.base import Usage
from configs.observability import MetricsConfig
from configs.schema import Price
from gateway.interfaces import Outcome

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
NO_LABEL = "none"
OTHER_TENANT = "other"


class Observation:
    """What the pipeline learns about one request; the observe middleware reads it at the end.
    Written by pipeline.py/streaming.py, never read on the request path."""

    __slots__ = ("attempts", "cache", "fallback", "first_byte", "hedge", "model", "outcome", "started", "upstream_s",
                 "upstream_ttft_s")

    def __init__(self) -> None:
        self.model = NO_LABEL
        self.started = 0.0  # perf_counter at the start (set by the observe middleware)
        self.outcome: Outcome | None = None
        self.upstream_s = 0.0  # time spent awaiting the upstream (all attempts)
        self.upstream_ttft_s = 0.0  # streams: wait for the first upstream chunk (all attempts)
        self.first_byte = 0.0  # streams: perf_counter when the first byte went to the client
        self.attempts = 0
        self.fallback = False
        self.hedge: str | None = None  # "won" | "lost" when a hedged duplicate was sent
        self.cache: str | None = None


class _Hist:
    """A local histogram: counts per bucket since the last flush, then pushed to ``child``."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self.child = child
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        if not any(self.counts):
            return
        for i, n in enumerate(self.counts):
            if n:
                self.child._buckets[i].inc(n)
                self.counts[i] = 0
        self.child._sum.inc(self.total)
        self.total = 0.0


class _Series:
    """Per (model, deployment, tenant, status): counters as plain numbers and the shared
    per-model histograms."""

    __slots__ = ("cost", "count", "hists", "price", "requests", "tokens_in", "tokens_out", "usage_children")

    def __init__(self, requests: Any, usage_children: tuple[Any, Any, Any], hists: _ModelHists,
                 price: Price | None) -> None:
        self.requests = requests
        self.usage_children = usage_children
        self.hists = hists
        self.price = price
        self.count = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost = 0.0

    def flush(self) -> None:
        if self.count:
            self.requests.inc(self.count)
            self.count = 0
        if self.tokens_in or self.tokens_out:
            tin, tout, cost = self.usage_children
            tin.inc(self.tokens_in)
            tout.inc(self.tokens_out)
            if self.cost:
                cost.inc(self.cost)
            self.tokens_in = self.tokens_out = 0
            self.cost = 0.0


class _ModelHists:
    __slots__ = ("counters", "latency", "overhead", "token_gap", "ttft")

    def __init__(self, latency: _Hist, overhead: _Hist, ttft: _Hist, token_gap: _Hist,
                 counters: dict[str, Any]) -> None:
        self.latency = latency
        self.overhead = overhead
        self.ttft = ttft
        self.token_gap = token_gap
        self.counters = counters  # retries, fallbacks, cache_exact, cache_semantic: [child, pending]

    def flush(self) -> None:
        for hist in (self.latency, self.overhead, self.ttft, self.token_gap):
            hist.flush()


class Families:
    """The prometheus-client objects, on the registry the caller passes (never the global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = self.registry = registry
        self.requests = Counter("turnout_requests_total", "Requests by model, deployment, tenant and status",
                                ["model", "deployment", "tenant", "status"], registry=r)
        self.latency = Histogram("turnout_request_duration_seconds", "Total request latency (streams: until the end)",
                                 ["model", "deployment"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("turnout_gateway_overhead_seconds",
                                  "Time not spent waiting on the upstream (streams: until the first byte)",
                                  ["model"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.ttft = Histogram("turnout_time_to_first_token_seconds", "Streams: request start to first byte sent",
                              ["model", "deployment"], buckets=LATENCY_BUCKETS, registry=r)
        self.token_gap = Histogram("turnout_inter_token_seconds", "Streams: mean time between output tokens",
                                   ["model"], buckets=TOKEN_GAP_BUCKETS, registry=r)
        self.tokens = Counter("turnout_tokens_total", "Tokens by model, tenant and kind (prompt|completion)",
                              ["model", "tenant", "kind"], registry=r)
        self.cost = Counter("turnout_cost_usd_total", "Spend in USD at the configured model price",
                            ["model", "tenant"], registry=r)
        self.cache_hits = Counter("turnout_cache_hits_total", "Answers served from the response cache",
                                  ["model", "kind"], registry=r)
        self.retries = Counter("turnout_retries_total", "Extra attempts after a failed one", ["model"], registry=r)
        self.fallbacks = Counter("turnout_fallbacks_total", "Requests served by a fallback model", ["model"],
                                 registry=r)
        self.hedges = Counter("turnout_hedges_total", "Requests that sent a hedged duplicate", ["model"],
                              registry=r)
        self.in_flight = Gauge("turnout_requests_in_flight", "Requests being served", registry=r,
                               multiprocess_mode="livesum")
        self.backend_in_flight = Gauge("turnout_backend_in_flight", "Attempts running per deployment",
                                       ["deployment"], registry=r, multiprocess_mode="livesum")
        self.backend_up = Gauge("turnout_backend_up", "1 when the deployment takes traffic", ["deployment"],
                                registry=r, multiprocess_mode="livemin")
        self.breaker_state = Gauge("turnout_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                   ["deployment"], registry=r, multiprocess_mode="livemax")
        self.attempts = Counter("turnout_backend_attempts_total", "Upstream attempts by deployment and result",
                                ["deployment", "result"], registry=r)
        self.budget_used = Gauge("turnout_budget_used_ratio", "Share of the tenant budget spent (admin plug-in)",
                                 ["tenant"], registry=r, multiprocess_mode="livemax")


class Recorder:
    def __init__(self, cfg: MetricsConfig, registry: CollectorRegistry,
                 price_of: Callable[[str], Price | None]) -> None:
        self.families = Families(registry)
        self._price_of = price_of
        self._fixed_tenants = frozenset(cfg.tenants)
        self._max_tenants = cfg.max_tenants
        self._tenants: dict[str, str] = {t: t for t in cfg.tenants}
        self._series: dict[tuple[str, str, str, int], _Series] = {}
        self._models: dict[tuple[str, str], _ModelHists] = {}
        self._per_model: dict[str, _ModelHists] = {}
        self.in_flight = 0
        self.exported: dict[tuple[int, str], int] = {}  # cluster counters already exported

    def tenant_label(self, tenant: str) -> str:
        label = self._tenants.get(tenant)
        if label is not None:
            return label
        if not self._fixed_tenants and len(self._tenants) < self._max_tenants:
            self._tenants[tenant] = tenant
            return tenant
        return OTHER_TENANT

    def record(self, obs: Observation, tenant: str, status: int, total_s: float, end: float) -> None:
        """Account one finished request. ``end`` is the perf_counter at its end."""
        outcome = obs.outcome
        model = outcome.model or obs.model if outcome is not None else obs.model
        deployment = (outcome.deployment if outcome is not None else None) or (
            "cache" if obs.cache is not None else NO_LABEL)
        series = self._series.get((model, deployment, tenant, status))
        if series is None:
            series = self._new_series(model, deployment, tenant, status)
        series.count += 1
        hists = series.hists
        hists.latency.observe(total_s)
        if outcome is not None:
            self._usage(series, outcome.usage)
        if obs.first_byte:
            ttft = obs.first_byte - (end - total_s)
            hists.ttft.observe(ttft)
            hists.overhead.observe(max(0.0, ttft - obs.upstream_ttft_s))
            if outcome is not None and outcome.usage.completion_tokens > 1:
                hists.token_gap.observe((end - obs.first_byte) / (outcome.usage.completion_tokens - 1))
        else:
            hists.overhead.observe(max(0.0, total_s - obs.upstream_s))
        if obs.attempts > 1 or obs.fallback or obs.cache is not None or obs.hedge is not None:
            self._events(hists, obs)

    def _usage(self, series: _Series, usage: Usage) -> None:
        series.tokens_in += usage.prompt_tokens
        series.tokens_out += usage.completion_tokens
        price = series.price
        if price is not None:
            series.cost += (usage.prompt_tokens * price.input_per_mtok
                            + usage.completion_tokens * price.output_per_mtok) / 1e6

    def _events(self, hists: _ModelHists, obs: Observation) -> None:
        counters = hists.counters
        if obs.attempts > 1:
            counters["retries"][1] += obs.attempts - 1
        if obs.fallback:
            counters["fallbacks"][1] += 1
        if obs.hedge is not None:
            counters["hedges"][1] += 1
        if obs.cache is not None:
            counters["cache_semantic" if obs.cache == "semantic" else "cache_exact"][1] += 1

    def _new_series(self, model: str, deployment: str, tenant: str, status: int) -> _Series:
        f = self.families
        hists = self._models.get((model, deployment))
        if hists is None:
            hists = self._models[(model, deployment)] = self._new_hists(model, deployment)
        usage = (f.tokens.labels(model, tenant, "prompt"), f.tokens.labels(model, tenant, "completion"),
                 f.cost.labels(model, tenant))
        series = _Series(f.requests.labels(model, deployment, tenant, str(status)), usage, hists,
                         self._price_of(model))
        self._series[(model, deployment, tenant, status)] = series
        return series

    def _new_hists(self, model: str, deployment: str) -> _ModelHists:
        f = self.families
        shared = self._per_model.get(model)
        overhead = shared.overhead if shared else _Hist(f.overhead.labels(model), OVERHEAD_BUCKETS)
        token_gap = shared.token_gap if shared else _Hist(f.token_gap.labels(model), TOKEN_GAP_BUCKETS)
        counters = shared.counters if shared else {
            "retries": [f.retries.labels(model), 0], "fallbacks": [f.fallbacks.labels(model), 0],
            "hedges": [f.hedges.labels(model), 0],
            "cache_exact": [f.cache_hits.labels(model, "exact"), 0],
            "cache_semantic": [f.cache_hits.labels(model, "semantic"), 0],
        }
        hists = _ModelHists(_Hist(f.latency.labels(model, deployment), LATENCY_BUCKETS), overhead,
                            _Hist(f.ttft.labels(model, deployment), LATENCY_BUCKETS), token_gap, counters)
        if shared is None:
            self._per_model[model] = hists
        return hists

    def flush(self) -> None:
        """Push everything accumulated since the last flush into the prometheus objects."""
        for series in self._series.values():
            series.flush()
        seen: set[int] = set()
        for hists in self._models.values():
            hists.latency.flush()
            hists.ttft.flush()
            if id(hists.counters) not in seen:
                seen.add(id(hists.counters))
                hists.overhead.flush()
                hists.token_gap.flush()
                for pair in hists.counters.values():
                    if pair[1]:
                        pair[0].inc(pair[1])
                        pair[1] = 0
        self.families.in_flight.set(self.in_flight)


OBSERVATION = web.RequestKey("observation", Observation)  # set by the observe middleware
