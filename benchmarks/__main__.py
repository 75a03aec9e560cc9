"""``python -m benchmarks``: Turnout's benchmark suite.

    python -m benchmarks setup [--peers]          # apt-get install wrk; LiteLLM + Portkey into benchmarks/.peers
    python -m benchmarks run [--scenario overhead,streaming,cache,failover,features] [--peers]
                             [--seconds 5] [--concurrency 1,16,64,256] [--upstream-ms 0,20]
                             [--mode closed|open --rate 500] [--quick] [--out DIR]

Results go to benchmarks/results/<timestamp>/ (results.json, results.md, *.png).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import peers, report, scenarios, scenarios_more
from benchmarks.procs import cpu_split

SCENARIOS = ("overhead", "streaming", "cache", "failover", "features")
RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stdout.flush()


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("wrk not found: installing it (apt-get install -y wrk) ...")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], check=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Turnout benchmark suite")
    sub = parser.add_subparsers(dest="command")
    setup = sub.add_parser("setup", help="install wrk (and the peer gateways with --peers)")
    setup.add_argument("--peers", action="store_true")
    run = sub.add_parser("run", help="run scenarios (default)")
    run.add_argument("--scenario", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    run.add_argument("--peers", action="store_true", help="also compare with LiteLLM proxy and Portkey")
    run.add_argument("--seconds", type=float, default=5.0, help="per measurement point")
    run.add_argument("--concurrency", type=_ints, default=[1, 16, 64, 256])
    run.add_argument("--upstream-ms", type=_floats, default=[0.0, 20.0])
    run.add_argument("--peer-concurrency", type=_ints, default=[1, 64])
    run.add_argument("--streams", type=int, default=200, help="sequential streams for TTFT")
    run.add_argument("--mode", choices=("closed", "open"), default="closed")
    run.add_argument("--rate", type=float, default=500.0, help="open loop: Poisson arrivals per second")
    run.add_argument("--rounds", type=int, default=3, help="interleaved rounds per point (median reported)")
    run.add_argument("--quick", action="store_true", help="2 s per point, 1 round, fewer streams")
    run.add_argument("--out", type=Path, default=None)
    return parser


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(args: argparse.Namespace) -> int:
    ensure_wrk()
    wanted = [s for s in args.scenario.split(",") if s]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        sys.stderr.write(f"unknown scenario(s): {', '.join(sorted(unknown))}\n")
        return 2
    seconds = 2.0 if args.quick else args.seconds
    streams = 50 if args.quick else args.streams
    sut, load = cpu_split()
    started = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / started
    with tempfile.TemporaryDirectory(prefix="turnout-bench-") as tmp:
        ctx = scenarios.Run(sut, load, seconds, Path(tmp), log, args.mode, args.rate, 1 if args.quick else args.rounds)
        results: dict[str, Any] = {"scenarios": {}}
        plan = {
            "overhead": lambda: scenarios.overhead(ctx, args.concurrency, args.upstream_ms),
            "streaming": lambda: scenarios.streaming(ctx, streams),
            "cache": lambda: scenarios_more.cache_hits(ctx),
            "failover": lambda: scenarios_more.failover(ctx),
            "features": lambda: scenarios_more.feature_matrix(ctx),
        }
        for name in wanted:
            results["scenarios"][name] = plan[name]()
        if args.peers:
            results["scenarios"]["peers"] = scenarios.peer_comparison(ctx, args.peer_concurrency, streams)
        results["services"] = ctx.services
    results["meta"] = {"started": started, "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "sut_cpus": sut,
                       "load_cpus": load, "seconds": seconds, "rounds": ctx.rounds, "mode": args.mode,
                       "rate": args.rate if args.mode == "open" else None, "python": sys.version.split()[0],
                       "argv": sys.argv[1:]}
    for path in report.write_all(out, results):
        log(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    if args.command == "setup":
        ensure_wrk()
        if args.peers:
            peers.install(log)
        log("setup done")
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
