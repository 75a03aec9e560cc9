"""Instructions per request of a Turnout feature set, counted by valgrind (callgrind).

    python -m benchmarks.instructions [--features none,auth+limits+metering] [--requests 900]

Wall-clock ratios on this shared VM drift by tens of percent; instruction counts do not (the
same code, inputs and environment give the same count, whatever else the machine runs). The
gateway runs under ``valgrind --tool=callgrind --instr-atstart=no``; after warm-up requests,
counting is switched on for ``--requests`` sequential keep-alive requests (c=1) against the
standalone mock, then dumped. What this cannot see: cache misses, lock and GIL waits, and the
batching of work that only concurrency brings (usage flushes stay small at valgrind's speed, so
metering's database share is overstated here). Needs /usr/bin/valgrind (Debian package
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
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def count(features: feat.Features, requests: int, workdir: Path) -> int:
    """Instructions per request of one feature set (whole process, every thread)."""
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
        _send(conn, headers, requests)
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
    ap.add_argument("--requests", type=int, default=900)
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
            result[features.name] = count(features, args.requests, Path(tmp))
        sys.stderr.write(f"{features.name}: {result[features.name]:,} instructions per request\n")
    base = result.get(feat.BASELINE.name)
    ratios = {name: round(n / base, 3) for name, n in result.items()} if base else {}
    sys.stdout.write(json.dumps({"instructions_per_request": result, "vs_none": ratios,
                                 "requests": args.requests}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
