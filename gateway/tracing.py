"""W3C trace context and optional OpenTelemetry spans.

When tracing is on, every request gets a traceparent for its upstream calls: the client's
trace id (or a new one) with a span id of the gateway's own, so backends see the gateway as
their parent. ``handlers`` forwards request[TRACEPARENT] in place of the client's header.
OpenTelemetry is imported only when ``tracing.otel`` is true; a missing package is a startup
error naming the fix, never a silent no-op.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from aiohttp import web

from configs.observability import TracingConfig

TRACEPARENT = web.RequestKey("traceparent", str)
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """(trace_id, parent_id, flags) of a valid version-00 header, else None."""
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None or m.group(1) == "ff" or m.group(2) == _ZERO_TRACE or m.group(3) == _ZERO_SPAN:
        return None
    return m.group(2), m.group(3), m.group(4)


def new_traceparent(trace_id: str | None = None, flags: str = "01") -> str:
    return f"00-{trace_id or os.urandom(16).hex()}-{os.urandom(8).hex()}-{flags}"


class Tracer:
    def __init__(self, cfg: TracingConfig) -> None:
        self._generate = cfg.generate_traceparent
        self._otel = _otel_tracer(cfg.service_name) if cfg.otel else None

    def start(self, request: web.Request) -> Any | None:
        """Set request[TRACEPARENT]; return an OpenTelemetry span when otel is on."""
        incoming = request.headers.get("traceparent")
        parsed = parse_traceparent(incoming) if incoming else None
        if parsed is None and not self._generate and self._otel is None:
            return None
        if self._otel is not None:
            return self._start_span(request, incoming if parsed else None)
        request[TRACEPARENT] = new_traceparent(*(parsed[0], parsed[2]) if parsed else ())
        return None

    def _start_span(self, request: web.Request, incoming: str | None) -> Any:
        propagate = importlib.import_module("opentelemetry.propagate")
        trace = importlib.import_module("opentelemetry.trace")
        ctx = propagate.extract({"traceparent": incoming}) if incoming else None
        span = self._otel.start_span(f"{request.method} {request.path}", context=ctx,  # type: ignore[union-attr]
                                     kind=trace.SpanKind.SERVER)
        sc = span.get_span_context()
        request[TRACEPARENT] = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
        return span

    def end(self, span: Any, model: str, deployment: str | None, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("gen_ai.request.model", model)
        if deployment is not None:
            span.set_attribute("turnout.deployment", deployment)
        span.end()


def _otel_tracer(service_name: str) -> Any:
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        raise RuntimeError(
            "observability.tracing.otel is true but OpenTelemetry is not installed; "
            "pip install opentelemetry-api opentelemetry-sdk (and an exporter), or set otel: false",
        ) from None
    return trace.get_tracer(service_name)
