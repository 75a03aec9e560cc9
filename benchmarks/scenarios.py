"""Scenarios. Each starts what it needs, measures Turnout and the mock called directly side by
side in the same run, stops everything, and returns rows for the report.

Added latency = Turnout's percentile minus the direct mock's at the same concurrency; req/s
ratio = Turnout / direct. Both go through the same load generator on the same CPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks import features as feat
from benchmarks import peers
from benchmarks.interleave import Target, measure
from benchmarks.load import LoadResult, run_wrk, stream_probe
from benchmarks.procs import Service, start_mock, start_turnout

CHAT = orjson.dumps({"model": feat.MODEL, "max_tokens": 16,
                     "messages": [{"role": "user", "content": "What is the capital of France?"}]})
STREAM = orjson.dumps({"model": feat.MODEL, "stream": True, "max_tokens": 32,
                       "messages": [{"role": "user", "content": "Tell me a short story."}]})
CACHEABLE = orjson.dumps({"model": feat.MODEL, "temperature": 0, "max_tokens": 16,
                          "messages": [{"role": "user", "content": "What is the capital of France?"}]})


@dataclass
class Run:
    sut_cpus: list[int]
    load_cpus: list[int]
    seconds: float
    workdir: Path
    log: Callable[[str], None]
    mode: str = "closed"
    rate: float | None = None
    rounds: int = 3
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    def note(self, svc: Service) -> None:
        self.services[svc.name] = {"version": svc.version, "flags": svc.flags}

    def wrk(self, label: str, svc: Service, body: bytes, connections: int,
            headers: dict[str, str] | None = None) -> LoadResult:
        res = run_wrk(label, svc.url, body, connections, self.seconds, self.load_cpus, headers,
                      rate=self.rate if self.mode == "open" else None)
        self.log(f"  {label:<28} c={connections:<4} {res.rps:>9.1f} req/s  p50 {res.p50_ms:7.3f} ms  "
                 f"p99 {res.p99_ms:8.3f} ms  errors {res.errors}")
        return res


@contextlib.contextmanager
def running(*services: Service) -> Iterator[None]:
    try:
        yield
    finally:
        for svc in services:
            svc.stop()


def turnout(run: Run, features: feat.Features, upstreams: list[str]) -> tuple[Service, dict[str, str]]:
    """Start Turnout with a feature set; with admin on, create a tenant + key and return its auth."""
    state = run.workdir / f"turnout-{len(list(run.workdir.glob('turnout-*')))}"  # own admin db, spill, logs
    state.mkdir()
    svc = start_turnout(feat.write_config(features, upstreams, state), run.sut_cpus)
    run.note(svc)
    headers = {"Authorization": f"Bearer {feat.bootstrap_key(svc.url)}"} if features.admin else {}
    return svc, headers


def compare(direct: LoadResult | dict[str, Any], via: LoadResult | dict[str, Any]) -> dict[str, Any]:
    d = direct.as_dict() if isinstance(direct, LoadResult) else direct
    v = via.as_dict() if isinstance(via, LoadResult) else via
    return {"connections": v["connections"], "direct": d, "turnout": v,
            "added_p50_ms": round(v["p50_ms"] - d["p50_ms"], 3), "added_p99_ms": round(v["p99_ms"] - d["p99_ms"], 3),
            "rps_ratio": round(v["rps"] / d["rps"], 3) if d["rps"] else None}


def overhead(run: Run, concurrencies: list[int], upstream_ms: list[float],
             features: feat.Features = feat.PRODUCTION) -> dict[str, Any]:
    rows = []
    memory = {}
    for ms in upstream_ms:
        run.log(f"overhead: upstream {ms:g} ms, Turnout features: {features.name}")
        mock = start_mock(run.load_cpus, first_token_ms=ms)
        gw, headers = turnout(run, features, [mock.url])
        with running(gw, mock):
            run.wrk("turnout warmup", gw, CHAT, 8, headers)
            got = measure(run, [("mock (direct)", mock, {}), ("turnout", gw, headers)], CHAT, concurrencies,
                          run.rounds)
            for direct, via in zip(got["mock (direct)"], got["turnout"], strict=True):
                rows.append({"upstream_ms": ms, **compare(direct, via)})
            memory[f"upstream_{ms:g}ms"] = round(gw.rss_mb(), 1)
    return {"features": features.name, "mode": run.mode, "rows": rows, "turnout_rss_mb": memory}


def streaming(run: Run, count: int, first_token_ms: float = 20.0) -> dict[str, Any]:
    run.log(f"streaming: upstream first token {first_token_ms:g} ms, 32 tokens at 2000 tok/s")
    mock = start_mock(run.load_cpus, first_token_ms=first_token_ms, output_tokens=32, tokens_per_s=2000)
    gw, headers = turnout(run, feat.PRODUCTION, [mock.url])
    with running(gw, mock):
        ttft = _ttft_pair(run, mock, gw, headers, count)
        direct = run.wrk("mock (direct) stream", mock, STREAM, 64)
        via = run.wrk("turnout stream", gw, STREAM, 64, headers)
    return {"first_token_ms": first_token_ms, "ttft": ttft, "throughput": compare(direct, via),
            "tokens_per_stream": 32}


def _ttft_pair(run: Run, mock: Service, gw: Service, headers: dict[str, str], count: int) -> dict[str, Any]:
    async def both() -> tuple[Any, Any]:
        m_host, m_port = _host_port(mock.url)
        g_host, g_port = _host_port(gw.url)
        await stream_probe("warmup", g_host, g_port, STREAM, 5, headers)
        direct = await stream_probe("mock (direct)", m_host, m_port, STREAM, count)
        via = await stream_probe("turnout", g_host, g_port, STREAM, count, headers)
        return direct, via

    direct, via = asyncio.run(both())
    added = round(via.ttft_p50_ms - direct.ttft_p50_ms, 3)
    run.log(f"  TTFT p50: direct {direct.ttft_p50_ms:.3f} ms, turnout {via.ttft_p50_ms:.3f} ms "
            f"(added {added:.3f} ms; {via.errors} errors)")
    return {"direct": direct.as_dict(), "turnout": via.as_dict(), "added_ttft_p50_ms": added}


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def peer_comparison(run: Run, concurrencies: list[int], count: int) -> dict[str, Any]:
    peers.install(run.log)
    run.log("peers: mock 0 ms; Turnout (production features), LiteLLM proxy, Portkey; same CPU, interleaved rounds")
    mock = start_mock(run.load_cpus)
    targets: list[Target] = [("mock (direct)", mock, {})]
    try:
        for name, start in (("turnout", None), ("litellm", peers.start_litellm), ("portkey", peers.start_portkey)):
            svc, headers = _start_peer(run, name, start, mock)
            targets.append((name, svc, headers))
            run.wrk(f"{name} warmup", svc, CHAT, 8, headers)
        rows = measure(run, targets, CHAT, concurrencies, run.rounds)
        memory = {name: round(svc.rss_mb(), 1) for name, svc, _ in targets[1:]}
        stream = {}
        for name, svc, headers in targets:
            host, port = _host_port(svc.url)
            stream[name] = asyncio.run(stream_probe(name, host, port, STREAM, count, headers)).as_dict()
    finally:
        for _, svc, _ in targets:
            svc.stop()
    return {"rows": rows, "rss_mb": memory, "stream_ttft": stream, "ratios": _ratios(rows, concurrencies)}


def _start_peer(run: Run, name: str, start: Any, mock: Service) -> tuple[Service, dict[str, str]]:
    if name == "turnout":
        return turnout(run, feat.PRODUCTION, [mock.url])
    svc: Service = start(mock.url, run.sut_cpus, run.workdir) if name == "litellm" else start(run.sut_cpus)
    run.note(svc)
    headers = (peers.portkey_headers(mock.url) if name == "portkey"
               else {"Authorization": f"Bearer {peers.LITELLM_MASTER_KEY}"})
    return svc, headers


def _ratios(rows: dict[str, list[dict[str, Any]]], concurrencies: list[int]) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(concurrencies):
        t = rows["turnout"][i]["rps"]
        portkey, litellm = rows["portkey"][i]["rps"], rows["litellm"][i]["rps"]
        out.append({"connections": c, "turnout_vs_portkey_rps": round(t / portkey, 2) if portkey else None,
                    "turnout_vs_litellm_rps": round(t / litellm, 2) if litellm else None})
    return out


def metric_value(base: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in Turnout's /metrics whose labels include ``labels``."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        sample, value = line.rsplit(" ", 1)
        got = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if sample.split("{", 1)[0] == name and all(got.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def kill_after(svc: Service, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, svc.kill)
    timer.start()
    return timer


def now() -> float:
    return time.monotonic()
