"""Bytecodes executed per request, per function, for two feature sets side by side.

    python -m benchmarks.opcodes [--features none,auth+limits+metering] [--requests 1000] [--top 40]

Like ``benchmarks.instructions`` this is deterministic (same code and inputs, same counts) and
blind to cache misses and concurrency, but it names the Python functions: the gateway runs
with ``benchmarks/optrace/sitecustomize.py`` on its PYTHONPATH, which counts every executed
bytecode and call on the event-loop thread between two signals, around ``--requests``
sequential keep-alive requests (c=1, after warm-up) against the standalone mock, plus a
second for the usage flush. Calls count a coroutine once per resumption. Prints one table:
per function, the bytecodes per request of each set and their difference, largest difference
first; the last line is JSON totals.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks import features as feat
from benchmarks.instructions import WARMUP, _send
from benchmarks.procs import ROOT, cpu_split, start_mock, start_turnout
from benchmarks.scenarios_more import FEATURE_SETS

Counts = dict[str, float]


def count(features: feat.Features, requests: int, workdir: Path) -> tuple[Counts, Counts]:
    """(bytecodes, calls) per request by ``file:function`` for one feature set."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "opcodes.tsv"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "TURNOUT_OPTRACE_OUT")}
    os.environ["PYTHONPATH"] = str(ROOT / "benchmarks" / "optrace")
    os.environ["TURNOUT_OPTRACE_OUT"] = str(out)
    mock = start_mock(cpu_split()[1])
    try:
        svc = start_turnout(feat.write_config(features, [mock.url], workdir), cpu_split()[0])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        headers = {"Content-Type": "application/json"}
        if features.admin:
            headers["Authorization"] = f"Bearer {feat.bootstrap_key(svc.url)}"
        host, port = svc.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        _send(conn, headers, WARMUP)
        os.kill(svc.proc.pid, signal.SIGUSR1)
        _pause(0.2)
        _send(conn, headers, requests)
        _pause(1.5)  # the usage flush of these requests runs on the same thread
        os.kill(svc.proc.pid, signal.SIGUSR2)
        for _ in range(50):
            if out.exists():
                break
            _pause(0.1)
        conn.close()
    finally:
        svc.stop()
        mock.stop()
    return _parse(out.read_text(), requests)


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)  # plain blocking process, no event loop here


def _parse(text: str, requests: int) -> tuple[Counts, Counts]:
    ops: collections.defaultdict[str, float] = collections.defaultdict(float)
    calls: collections.defaultdict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        n, key = line.split("\t", 1)
        parts = key.split("|")
        name = f"{_short(parts[0])}:{parts[1]}"
        (calls if len(parts) == 3 else ops)[name] += int(n) / requests
    return dict(ops), dict(calls)


def _short(path: str) -> str:
    for prefix in (str(ROOT) + "/", "site-packages/"):
        if prefix in path:
            return path.split(prefix, 1)[1]
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default=f"{feat.BASELINE.name},{feat.ADMIN_ONLY.name}",
                    help="two feature set names: " + ", ".join(f.name for f in FEATURE_SETS))
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    by_name = {f.name: f for f in FEATURE_SETS}
    names = args.features.split(",")
    if len(names) != 2 or any(n not in by_name for n in names):
        ap.error("--features takes two known feature set names")
    results = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="turnout-opcodes-") as tmp:
            results.append(count(by_name[name], args.requests, Path(tmp)))
    (a, a_calls), (b, b_calls) = results
    sys.stdout.write(f"{'diff':>8} {names[0][:12]:>12} {names[1][:12]:>12}  calls  function\n")
    for key in sorted(set(a) | set(b), key=lambda k: b.get(k, 0) - a.get(k, 0), reverse=True)[:args.top]:
        sys.stdout.write(f"{b.get(key, 0) - a.get(key, 0):8.1f} {a.get(key, 0):12.1f} {b.get(key, 0):12.1f}"
                         f"  {b_calls.get(key, 0):5.2f}  {key}\n")
    totals = {names[0]: round(sum(a.values())), names[1]: round(sum(b.values()))}
    sys.stdout.write(json.dumps({"bytecodes_per_request": totals, "requests": args.requests}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
