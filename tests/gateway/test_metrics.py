"""Metrics: the recorder's exposition, label bounds and cost; /metrics inside a real gateway;
traceparent propagation to a real upstream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backends.base import Usage
from backends.mock_server import MockServerHandle
from configs import load_text
from configs.observability import MetricsConfig
from configs.schema import Price
from gateway.app import create_app
from gateway.interfaces import Outcome
from gateway.keys import AUTHENTICATOR
from gateway.metrics import Observation, Recorder
from gateway.middleware import make_auth
from gateway.tracing import parse_traceparent
from tests.conftest import GatewayFactory, free_port, openai_yaml, wait_http_blocking


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def finished(model: str = "m", deployment: str | None = "d", prompt: int = 10, completion: int = 20,
             upstream: float = 0.0) -> Observation:
    obs = Observation()
    obs.model = model
    obs.outcome = Outcome(model, deployment, Usage(prompt, completion), 200, 0.1)
    obs.upstream_s = upstream
    return obs


def make_recorder(**kw: Any) -> tuple[Recorder, CollectorRegistry]:
    registry = CollectorRegistry()
    price = Price(input_per_mtok=1.0, output_per_mtok=2.0)
    return Recorder(MetricsConfig(**kw), registry, lambda m: price if m == "m" else None), registry


def test_exposition_counts_buckets_tokens_cost() -> None:
    rec, registry = make_recorder()
    rec.record(finished(upstream=0.0098), "t1", 200, 0.0100, 100.0)  # overhead 0.2 ms
    rec.record(finished(upstream=0.0), "t1", 200, 0.3, 100.0)  # overhead 300 ms → +Inf bucket
    rec.record(finished(model="n"), "t1", 502, 0.02, 100.0)
    assert samples(registry).get(("turnout_requests_total", (("deployment", "d"), ("model", "m"),
                                                             ("status", "200"), ("tenant", "t1")))) == 0
    rec.flush()
    s = samples(registry)
    labels = (("deployment", "d"), ("model", "m"), ("status", "200"), ("tenant", "t1"))
    assert s[("turnout_requests_total", labels)] == 2
    assert s[("turnout_request_duration_seconds_count", (("deployment", "d"), ("model", "m")))] == 2
    assert s[("turnout_request_duration_seconds_bucket", (("deployment", "d"), ("le", "0.01"), ("model", "m")))] == 1
    assert s[("turnout_request_duration_seconds_bucket", (("deployment", "d"), ("le", "0.5"), ("model", "m")))] == 2
    assert s[("turnout_gateway_overhead_seconds_bucket", (("le", "0.0001"), ("model", "m")))] == 0
    assert s[("turnout_gateway_overhead_seconds_bucket", (("le", "0.00025"), ("model", "m")))] == 1
    assert s[("turnout_gateway_overhead_seconds_bucket", (("le", "0.1"), ("model", "m")))] == 1
    assert s[("turnout_gateway_overhead_seconds_bucket", (("le", "+Inf"), ("model", "m")))] == 2
    assert s[("turnout_gateway_overhead_seconds_sum", (("model", "m"),))] == pytest.approx(0.3002)
    assert s[("turnout_tokens_total", (("kind", "prompt"), ("model", "m"), ("tenant", "t1")))] == 20
    assert s[("turnout_tokens_total", (("kind", "completion"), ("model", "m"), ("tenant", "t1")))] == 40
    assert s[("turnout_cost_usd_total", (("model", "m"), ("tenant", "t1")))] == pytest.approx(100e-6)
    assert s[("turnout_cost_usd_total", (("model", "n"), ("tenant", "t1")))] == 0  # no price: no cost
    rec.flush()  # a second flush adds nothing
    assert samples(registry)[("turnout_requests_total", labels)] == 2


def test_streams_ttft_overhead_and_events() -> None:
    rec, registry = make_recorder()
    obs = finished(completion=11)
    obs.first_byte = 100.05  # request started at 100.0 (end 101.0 - total 1.0)
    obs.upstream_ttft_s = 0.049
    obs.attempts, obs.fallback, obs.hedge = 3, True, "won"
    rec.record(obs, "t", 200, 1.0, 101.0)
    hit = finished()
    hit.cache = "semantic"
    rec.record(hit, "t", 200, 0.001, 50.0)
    rec.flush()
    s = samples(registry)
    assert s[("turnout_time_to_first_token_seconds_sum", (("deployment", "d"), ("model", "m")))] == pytest.approx(0.05)
    assert s[("turnout_gateway_overhead_seconds_bucket", (("le", "0.001"), ("model", "m")))] == 2
    assert s[("turnout_inter_token_seconds_sum", (("model", "m"),))] == pytest.approx(0.095)  # 0.95 s / 10 gaps
    assert s[("turnout_retries_total", (("model", "m"),))] == 2
    assert s[("turnout_fallbacks_total", (("model", "m"),))] == 1
    assert s[("turnout_hedges_total", (("model", "m"),))] == 1
    assert s[("turnout_cache_hits_total", (("kind", "semantic"), ("model", "m")))] == 1


def test_tenant_labels_are_bounded() -> None:
    rec, _ = make_recorder(max_tenants=2)
    assert [rec.tenant_label(t) for t in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]
    fixed, _ = make_recorder(tenants=("vip",))
    assert [fixed.tenant_label(t) for t in ("x", "vip", "y")] == ["other", "vip", "other"]


def test_record_costs_a_few_microseconds() -> None:
    rec, _ = make_recorder()
    obs = finished(upstream=0.001)
    rec.record(obs, "t", 200, 0.002, 1.0)
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        rec.record(obs, "t", 200, 0.002, 1.0)
    per_call_us = (time.perf_counter() - started) / n * 1e6
    assert per_call_us < 5.0, f"record() takes {per_call_us:.2f} µs"


async def test_metrics_endpoint_in_a_real_gateway(gateway: GatewayFactory, mock_upstream: MockServerHandle) -> None:
    base = await gateway(openai_yaml(mock_upstream.url))
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as http:
        for stream in (False, True):
            async with http.post(f"{base}/v1/chat/completions", json={**body, "stream": stream}) as resp:
                assert resp.status == 200
                await resp.read()
        async with http.post(f"{base}/v1/chat/completions", json={**body, "model": "nope"}) as resp:
            assert resp.status == 404
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(text) for s in f.samples}
    ok = (("deployment", "up"), ("model", "chat"), ("status", "200"), ("tenant", "default"))
    assert got[("turnout_requests_total", ok)] == 2
    missing = (("deployment", "none"), ("model", "none"), ("status", "404"), ("tenant", "default"))
    assert got[("turnout_requests_total", missing)] == 1
    assert got[("turnout_time_to_first_token_seconds_count", (("deployment", "up"), ("model", "chat")))] == 1
    assert got[("turnout_tokens_total", (("kind", "completion"), ("model", "chat"), ("tenant", "default")))] == 24
    assert got[("turnout_breaker_state", (("deployment", "up"),))] == 0
    assert got[("turnout_backend_attempts_total", (("deployment", "up"), ("result", "success")))] == 2
    assert got[("turnout_requests_in_flight", ())] == 0


class _Deny:
    def authenticate_now(self, request: web.Request) -> Any:
        return None  # always the awaited path

    async def authenticate(self, request: web.Request) -> Any:
        from gateway.errors import AuthenticationError

        raise AuthenticationError("no key")


@pytest.mark.parametrize(("public", "status"), [(True, 200), (False, 401)])
async def test_metrics_public_or_behind_auth(public: bool, status: int) -> None:
    flag = str(public).lower()
    cfg = load_text(openai_yaml("http://127.0.0.1:9") + f"\nobservability: {{metrics: {{public: {flag}}}}}\n")
    app = create_app(cfg)
    app[AUTHENTICATOR] = _Deny()
    app.middlewares.append(make_auth())
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
            assert resp.status == status
    finally:
        await server.close()


async def test_metrics_disabled_means_no_route(gateway: GatewayFactory) -> None:
    base = await gateway(openai_yaml("http://127.0.0.1:9") + "\nobservability: {metrics: {enabled: false}}\n")
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        assert resp.status == 404


@pytest.fixture
async def header_upstream() -> AsyncIterator[tuple[str, list[CIMultiDict[str]]]]:
    seen: list[CIMultiDict[str]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.copy())
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": "upstream-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}", seen
    await server.close()


@pytest.mark.parametrize("generate", [True, False])
async def test_traceparent_reaches_the_backend(gateway: GatewayFactory, generate: bool,
                                               header_upstream: tuple[str, list[CIMultiDict[str]]]) -> None:
    url, seen = header_upstream
    tracing = f"\nobservability: {{tracing: {{generate_traceparent: {str(generate).lower()}}}}}\n"
    base = await gateway(openai_yaml(url) + tracing)
    client_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/v1/chat/completions", json=body, headers={"traceparent": client_tp}) as resp:
            assert resp.status == 200
    without, with_client = seen
    if generate:
        assert parse_traceparent(without["traceparent"]) is not None
        trace_id, parent, _ = parse_traceparent(with_client["traceparent"]) or ("", "", "")
        assert trace_id == "0af7651916cd43dd8448eb211c80319c" and parent != "b7ad6b7169203331"
    else:
        assert "traceparent" not in without
        assert with_client["traceparent"] == client_tp  # forwarded untouched


def test_otel_without_the_package_is_a_clear_startup_error() -> None:
    cfg = load_text(openai_yaml("http://127.0.0.1:9") + "\nobservability: {tracing: {otel: true}}\n")
    with pytest.raises(RuntimeError, match="OpenTelemetry is not installed"):
        create_app(cfg)


def test_two_workers_share_one_metrics_view(tmp_path: Path) -> None:
    """``serve --workers 2``: the supervisor's PROMETHEUS_MULTIPROC_DIR lets either worker's
    /metrics count the requests both served; the directory is removed on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_blocking(f"{base}/health", timeout=30)
        body = orjson.dumps({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]})
        for _ in range(12):  # new connection each: SO_REUSEPORT spreads them over both workers
            req = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json", "Connection": "close"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200
        threading.Event().wait(1.5)  # > flush_interval: both workers have published
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "turnout_requests_total" and s.labels.get("model") == "mock-small")
        assert total == 12
        assert list(tmp_path.glob("turnout-metrics-*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert not list(tmp_path.glob("turnout-metrics-*"))
