"""Instructions per request of a Turnout feature set, counted by valgrind (callgrind).

    python -m benchmarks.instructions [--features none,auth+limits+metering] [--requests 900]
                                      [--connections 64 --seconds 20]

Wall-clock ratios on this shared VM drift by tens of percent; instruction counts do not (the
same code, inputs and environment give the same count, whatever else the machine runs). The
gateway runs under ``valgrind --tool=callgrind --instr-atstart=no``; after warm-up requests,
counting is switched on for ``--requests`` sequential keep-alive requests (c=1) against the
standalone mock, or, with ``--connections``, for what wrk completes in ``--seconds`` (the
CPU-bound case: the ratio of instructions per request is then the req/s ratio a CPU-bound run
would show, were instructions all that cost). Then it is dumped. What this cannot see: time in
the kernel (system calls, mostly the baseline's), cache misses, lock and GIL waits; at c=1 also
the batching that concurrency brings (usage flushes stay small at valgrind's speed, so
metering's database share is overstated there). Needs /usr/bin/valgrind (Debian package
``valgrind``); each feature set takes about a minute.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import features as feat
from benchmarks.load import run_wrk
from benchmarks.procs import ROOT, cpu_split, free_port, start_mock, wait_http
from benchmarks.scenarios import CHAT
from benchmarks.scenarios_more import FEATURE_SETS

WARMUP = 300


def _send(conn: http.client.HTTPConnection, headers: dict[str, str], n: int) -> None:
    for _ in range(n):
        conn.request("POST", "/v1/chat/completions", body=CHAT, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"request failed with {resp.status}")


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def _load(url: str, headers: dict[str, str], connections: int, seconds: float) -> int:
    """Closed-loop load from wrk; the requests it completed. Under valgrind the gateway is ~50x
    slower, so it is the bottleneck and every event-loop turn finds many requests ready, as
    in a CPU-bound run. The up to ``connections`` requests in flight when wrk stops are counted
    as instructions but not as requests (about 2% at 20 s, alike for every feature set)."""
    result = run_wrk("callgrind", url, CHAT, connections, seconds, cpu_split()[1], headers)
    if result.errors:
        raise RuntimeError(f"{result.errors} requests failed under load")
    return result.requests


def count(features: feat.Features, requests: int, workdir: Path, connections: int = 1, seconds: float = 20.0) -> int:
    """Instructions per request of one feature set (whole process, every thread): ``requests``
    sequential ones, or with ``connections`` > 1 what wrk completes in ``seconds``."""
    mock = start_mock(cpu_split()[1])
    out = workdir / "callgrind.out"
    port = free_port()
    cfg = feat.write_config(features, [mock.url], workdir)
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", sys.executable,
           "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, timeout=600)
        headers = {"Content-Type": "application/json"}
        if features.admin:
            headers["Authorization"] = f"Bearer {feat.bootstrap_key(url)}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        _send(conn, headers, WARMUP)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        if connections == 1:
            _send(conn, headers, requests)
        else:
            requests = _load(url, headers, connections, seconds)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        conn.close()
        dumps = sorted(workdir.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
        return round(_total(dumps[-1]) / requests)
    finally:
        proc.terminate()
        proc.wait(120)
        mock.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default=f"{feat.BASELINE.name},{feat.ADMIN_ONLY.name}",
                    help="comma list of feature set names: " + ", ".join(f.name for f in FEATURE_SETS))
    ap.add_argument("--requests", type=int, default=900, help="sequential requests counted (c=1)")
    ap.add_argument("--connections", type=int, default=1,
                    help="above 1: count what wrk completes with this many connections instead")
    ap.add_argument("--seconds", type=float, default=20.0, help="wrk's duration with --connections")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.stderr.write("valgrind not found: apt-get install -y valgrind\n")
        return 2
    by_name = {f.name: f for f in FEATURE_SETS}
    unknown = [name for name in args.features.split(",") if name not in by_name]
    if unknown:
        ap.error(f"unknown feature set(s): {', '.join(unknown)}")
    wanted = [by_name[name] for name in args.features.split(",")]
    result: dict[str, int] = {}
    for features in wanted:
        with tempfile.TemporaryDirectory(prefix="turnout-instr-") as tmp:
            result[features.name] = count(features, args.requests, Path(tmp), args.connections, args.seconds)
        sys.stderr.write(f"{features.name}: {result[features.name]:,} instructions per request\n")
    base = result.get(feat.BASELINE.name)
    ratios = {name: round(n / base, 3) for name, n in result.items()} if base else {}
    load = {"requests": args.requests} if args.connections == 1 else {"connections": args.connections,
                                                                       "seconds": args.seconds}
    sys.stdout.write(json.dumps({"instructions_per_request": result, "vs_none": ratios, **load}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
