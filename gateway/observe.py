"""Wiring of metrics, the access log and tracing into the app.

``install(app, cfg)`` adds (when any of them is on) the outermost ``observe`` middleware, the
/metrics route and a cleanup context that runs the flush task and the access-log writer.
The middleware runs outside the error envelope so it sees the final status of every request,
errors included. Per request it creates an ``Observation`` (request[OBSERVATION]) that the
pipeline fills in, and at the end hands it to the recorder and the access log.

With ``metrics.public`` the middleware answers the metrics path itself, before auth; otherwise
the route sits behind auth like every other one. In multi-process mode (PROMETHEUS_MULTIPROC_DIR
set by the supervisor) a scrape reads every worker's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from configs.environment import prometheus_multiproc_dir, set_prometheus_multiproc_dir
from configs.schema import GatewayConfig, Price
from gateway.access_log import AccessLog
from gateway.keys import RUNTIME
from gateway.metrics import OBSERVATION, Observation, Recorder
from gateway.middleware import PRINCIPAL, REQUEST_ID
from gateway.tracing import TRACEPARENT, Tracer

RECORDER = web.AppKey("metrics_recorder", Recorder)
ACCESS_LOG = web.AppKey("access_log", AccessLog)


def install(app: web.Application, cfg: GatewayConfig) -> None:
    obs = cfg.observability
    recorder = None
    if obs.metrics.enabled:
        def price_of(model: str) -> Price | None:
            found = app[RUNTIME].current.config.models.get(model)
            return found.price if found is not None else None

        recorder = Recorder(obs.metrics, CollectorRegistry(auto_describe=True), price_of)
        app[RECORDER] = recorder
        if not obs.metrics.public:
            app.router.add_get(obs.metrics.path, metrics_handler)
    access = AccessLog(obs.access_log) if obs.access_log.enabled else None
    if access is not None:
        app[ACCESS_LOG] = access
    tracer = Tracer(obs.tracing) if (obs.tracing.generate_traceparent or obs.tracing.otel) else None
    if recorder is None and access is None and tracer is None:
        return
    public = obs.metrics.path if recorder is not None and obs.metrics.public else None
    app.middlewares.append(make_observe(recorder, access, tracer, public))
    app.cleanup_ctx.append(_background(recorder, access, obs.metrics.flush_interval))


def make_observe(recorder: Recorder | None, access: AccessLog | None, tracer: Tracer | None,
                 public_path: str | None) -> Middleware:
    perf = time.perf_counter

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == public_path:
            return await metrics_handler(request)
        started = perf()
        obs = request[OBSERVATION] = Observation()
        obs.started = started
        span = tracer.start(request) if tracer is not None else None
        if recorder is not None:
            recorder.in_flight += 1
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            end = perf()
            principal = request.get(PRINCIPAL)
            tenant = principal.tenant if principal is not None else "default"
            if recorder is not None:
                recorder.in_flight -= 1
                recorder.record(obs, recorder.tenant_label(tenant), status, end - started, end)
            if access is not None:
                access.add(request, obs, tenant, status, end - started, request.get(REQUEST_ID))
            if span is not None and tracer is not None:
                out = obs.outcome
                tracer.end(span, obs.model, out.deployment if out is not None else None, status)

    return observe


def traceparent_of(request: web.Request) -> str | None:
    """The traceparent to send upstream when tracing made one for this request."""
    value: str | None = request.get(TRACEPARENT)
    return value


async def metrics_handler(request: web.Request) -> web.Response:
    recorder = request.app[RECORDER]
    recorder.flush()
    export_cluster(request.app, recorder)
    if prometheus_multiproc_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(recorder.families.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def export_cluster(app: web.Application, recorder: Recorder) -> None:
    """Per-deployment gauges and attempt counters from the routing layer's live state."""
    f = recorder.families
    runtime = app[RUNTIME].current
    breakers = runtime.breaker_states()
    for name, stats in runtime.cluster.stats.items():
        f.backend_in_flight.labels(name).set(stats.in_flight)
        f.backend_up.labels(name).set(1 if runtime.cluster.available(name) else 0)
        f.breaker_state.labels(name).set(_BREAKER_VALUE.get(breakers.get(name, "closed"), 0))
        for result, total in (("success", stats.successes), ("failure", stats.failures)):
            key = (id(stats), result)
            delta = total - recorder.exported.get(key, 0)
            if delta > 0:
                f.attempts.labels(name, result).inc(delta)
                recorder.exported[key] = total


_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


def _background(recorder: Recorder | None, access: AccessLog | None,
                interval: float) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        tasks = []
        if recorder is not None and prometheus_multiproc_dir() is not None:
            tasks.append(asyncio.create_task(_flush_loop(app, recorder, interval), name="metrics-flush"))
        if access is not None:
            tasks.append(asyncio.create_task(access.run(), name="access-log"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if recorder is not None:
                recorder.flush()
            if access is not None:
                await access.drain()

    return ctx


async def _flush_loop(app: web.Application, recorder: Recorder, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        recorder.flush()
        export_cluster(app, recorder)


def share_metrics_between_workers() -> Callable[[], None]:
    """Supervisor side of multi-process metrics: export a fresh PROMETHEUS_MULTIPROC_DIR that the
    workers inherit (an operator-set one is emptied instead, as prometheus-client requires).
    Returns the cleanup to call when the supervisor exits."""
    configured = prometheus_multiproc_dir()
    if configured is not None:
        for stale in Path(configured).glob("*.db"):
            stale.unlink()
        return lambda: None
    made = tempfile.mkdtemp(prefix="turnout-metrics-")
    set_prometheus_multiproc_dir(made)
    return lambda: shutil.rmtree(made, ignore_errors=True)


def worker_gone(pid: int) -> None:
    """Drop a dead worker's live gauges (in-flight, breaker states) from the shared files."""
    if prometheus_multiproc_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
