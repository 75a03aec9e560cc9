"""The ``observability:`` section. Every key is optional; an absent section means the defaults.

```yaml
observability:
  metrics:
    enabled: true          # Prometheus /metrics and the per-request recorder
    public: true           # false: /metrics goes through auth like any route
    path: /metrics
    max_tenants: 20        # tenant label cardinality bound: first N tenants seen, the rest "other"
    tenants: [acme, beta]  # or a fixed set that gets its own label (others → "other")
    flush_interval: 1s     # how often a worker publishes its counters (multi-process mode)
  access_log:
    enabled: false
    level: info            # info: every request; warning: 4xx/5xx only; error: 5xx only
    path: null             # null: stderr; else a file (appended)
  tracing:
    generate_traceparent: false   # give backends a W3C traceparent when the client sent none
    otel: false                   # OpenTelemetry spans (needs opentelemetry-api installed)
    service_name: turnout
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

from configs.reader import Reader

ACCESS_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True
    public: bool = True
    path: str = "/metrics"
    max_tenants: int = 20
    tenants: tuple[str, ...] = ()
    flush_interval: float = 1.0

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"metrics path must start with '/': {self.path!r}")
        if self.flush_interval <= 0:
            raise ValueError("metrics flush_interval must be positive")


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    enabled: bool = False
    level: str = "info"
    path: str | None = None


@dataclass(frozen=True, slots=True)
class TracingConfig:
    generate_traceparent: bool = False
    otel: bool = False
    service_name: str = "turnout"


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)


def _parse_metrics(r: Reader | None) -> MetricsConfig:
    if r is None:
        return MetricsConfig()
    path = r.str("path", "/metrics")
    if not path.startswith("/"):
        raise r.error("path", f"expected a URL path starting with '/'; got {path!r}")
    cfg = MetricsConfig(
        enabled=r.bool("enabled", True), public=r.bool("public", True), path=path,
        max_tenants=r.int("max_tenants", 20, min_value=0), tenants=r.str_list("tenants", ()),
        flush_interval=r.duration("flush_interval", 1.0),
    )
    r.finish()
    return cfg


def _parse_access_log(r: Reader | None) -> AccessLogConfig:
    if r is None:
        return AccessLogConfig()
    cfg = AccessLogConfig(
        enabled=r.bool("enabled", True), level=r.choice("level", ACCESS_LOG_LEVELS, "info"),
        path=r.str("path", None),
    )
    r.finish()
    return cfg


def _parse_tracing(r: Reader | None) -> TracingConfig:
    if r is None:
        return TracingConfig()
    cfg = TracingConfig(
        generate_traceparent=r.bool("generate_traceparent", False), otel=r.bool("otel", False),
        service_name=r.str("service_name", "turnout"),
    )
    r.finish()
    return cfg


def parse_observability(r: Reader | None) -> ObservabilityConfig:
    if r is None:
        return ObservabilityConfig()
    cfg = ObservabilityConfig(
        metrics=_parse_metrics(r.section("metrics")),
        access_log=_parse_access_log(r.section("access_log")),
        tracing=_parse_tracing(r.section("tracing")),
    )
    r.finish()
    return cfg
