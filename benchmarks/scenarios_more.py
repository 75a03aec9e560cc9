"""Scenarios: the cache-hit path, failover while a backend is killed, each feature on and off."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import features as feat
from benchmarks.interleave import Target, measure
from benchmarks.procs import start_mock
from benchmarks.scenarios import CACHEABLE, CHAT, Run, compare, kill_after, metric_value, running, turnout
from benchmarks.shared_core import shared_ratios


def cache_hits(run: Run, connections: int = 64, upstream_ms: float = 20.0) -> dict[str, Any]:
    run.log(f"cache: exact cache on, identical requests, upstream {upstream_ms:g} ms")
    mock = start_mock(run.load_cpus, first_token_ms=upstream_ms)
    gw, headers = turnout(run, feat.CACHED, [mock.url])
    with running(gw, mock):
        direct = run.wrk("mock (direct)", mock, CACHEABLE, connections)
        via = run.wrk("turnout cache hits", gw, CACHEABLE, connections, headers)
        hits = metric_value(gw.url, "turnout_cache_hits_total")
        served = metric_value(gw.url, "turnout_requests_total")
    row = compare(direct, via)
    row["cache_hits"] = hits
    row["hit_ratio"] = round(hits / served, 4) if served else 0.0  # the gateway's own count, warmup included
    return {"upstream_ms": upstream_ms, **row}


def failover(run: Run, connections: int = 16) -> dict[str, Any]:
    kill_at = round(run.seconds * 0.4, 2)
    run.log(f"failover: two mock deployments, one killed (SIGKILL) {kill_at:g} s into the run")
    first = start_mock(run.load_cpus, first_token_ms=2)
    second = start_mock(run.load_cpus, first_token_ms=2)
    gw, headers = turnout(run, feat.PRODUCTION, [first.url, second.url])
    with running(gw, first, second):
        timer = kill_after(second, kill_at)
        res = run.wrk("turnout (one backend killed)", gw, CHAT, connections, headers)
        timer.cancel()
        retries = metric_value(gw.url, "turnout_retries_total")
        failed = metric_value(gw.url, "turnout_backend_attempts_total", deployment="up1", result="failure")
    return {"result": res.as_dict(), "client_errors": res.errors, "retries": retries,
            "failed_attempts_on_killed": failed, "kill_at_s": kill_at}


FEATURE_SETS = (feat.BASELINE, feat.METRICS, feat.ADMIN_ONLY, feat.PRODUCTION,
                feat.Features("production + access log", admin=True, access_log=True))


def paired_ratio(rounds: list[float], base_rounds: list[float]) -> float | None:
    """Median over rounds of a target's req/s over the baseline's in the same round: the machine's
    drift between rounds (often larger than the difference measured) cancels in each pair."""
    ratios = [x / b for x, b in zip(rounds, base_rounds, strict=True) if b]
    return round(statistics.median(ratios), 3) if ratios else None


def feature_matrix(run: Run, concurrencies: tuple[int, ...] = (1, 64)) -> dict[str, Any]:
    run.log("features: every feature set started at once against the same 0 ms mock; interleaved rounds, then "
            "each set together with the baseline on the shared core")
    mock = start_mock(run.load_cpus)
    targets: list[Target] = []
    try:
        for features in FEATURE_SETS:
            gw, headers = turnout(run, features, [mock.url])
            targets.append((features.name, gw, headers))
            run.wrk(f"{features.name[:20]} warmup", gw, CHAT, 8, headers)
        got = measure(run, targets, CHAT, list(concurrencies), run.rounds)
        shared = shared_ratios(run, targets[0], targets[1:], CHAT, max(concurrencies), run.rounds)
        rss = {name: round(svc.rss_mb(), 1) for name, svc, _ in targets}
    finally:
        for _, svc, _ in targets:
            svc.stop()
        mock.stop()
    rows = [{**row, "features": name, "rss_mb": rss[name]} for name, per_c in got.items() for row in per_c]
    base = {r["connections"]: r for r in rows if r["features"] == feat.BASELINE.name}
    for row in rows:
        ref = base[row["connections"]]
        row["rps_vs_none"] = paired_ratio(row["rps_rounds"], ref["rps_rounds"])
        row["added_p50_vs_none_ms"] = round(row["p50_ms"] - ref["p50_ms"], 3)
        if row["connections"] == max(concurrencies) and row["features"] in shared:
            row.update(shared[row["features"]])
    return {"rows": rows}
