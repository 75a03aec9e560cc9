"""Exact-cache hit vs miss throughput through a real gateway (must-show: hit >= 5x miss req/s).

    python -m benchmarks.cache_hit_speed [--seconds 10] [--connections 32] [--json out.json]

Starts ``turnout mock-backend`` (0 ms first token, 0 ms per token) and ``turnout serve`` with an
exact in-memory cache in front of it, then drives the gateway with ``wrk`` (POST, keep-alive)
in the same run, one phase after the other:

- ``hit``: the same deterministic body every time (after the first request, all exact hits);
- ``miss``: a Lua counter makes every body unique, so each request is a cache lookup, an
  upstream call and a cache write — the full cost of a miss;
- ``floor``: ``benchmarks.bare_aiohttp`` (one route, a fixed answer, nothing else) under the same
  pinning and load: no hit through aiohttp can be faster, so ``floor_over_miss`` bounds what
  ``hit_over_miss`` can reach on this machine, and ``hit_over_floor_cost`` is the hit's CPU per
  request in units of the floor's.

Gateway pinned to the last CPU, upstream and wrk to the others (taskset when present). The
last stdout line is one JSON object with both req/s, latencies and their ratio. Needs
/usr/bin/wrk; bounded to about ``3 * seconds + 15`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.procs import ROOT, cpu_split, free_port, pinned, wait_http

WRK = shutil.which("wrk") or "/usr/bin/wrk"
_HIT_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": "Capital of France?"}]}'
"""
_MISS_LUA = """counter = 0
request = function()
  counter = counter + 1
  local body = '{"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": "Question number '
    .. counter .. ' from ' .. tostring(math.random(1e9)) .. '?"}]}'
  return wrk.format("POST", "/v1/chat/completions", {["Content-Type"] = "application/json"}, body)
end
"""
_CONFIG = """server: {{host: 127.0.0.1, port: {port}}}
logging: {{level: warning}}
backends:
  up:
    kind: openai
    url: "http://127.0.0.1:{upstream}"
    model: upstream-model
models:
  chat:
    deployments: [up]
cache:
  store: memory
  exact: {{ttl: 10m}}
"""





async def _cache_state(url: str) -> str | None:
    """The x-turnout-cache header of the hit body's second request (expected: hit-exact)."""
    body = _HIT_LUA.split("wrk.body = '")[1].split("'\n")[0]
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                state = resp.headers.get("x-turnout-cache")
    return state


def _wrk(url: str, lua: str, seconds: int, connections: int, cpus: list[int]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(lua)
    try:
        cmd = pinned([WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", file.name, url], cpus)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    finally:
        os.unlink(file.name)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_s": float(rps.group(1)) if rps else 0.0,
            "p50": _match(r"^\s+50%\s+(\S+)", out), "p99": _match(r"^\s+99%\s+(\S+)", out),
            "non_2xx": int(errors.group(1)) if errors else 0}


def _match(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1) if found else None


def _start(cmd: list[str], cpus: list[int]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(pinned(cmd, cpus), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()


def run(seconds: int, connections: int) -> dict[str, Any]:
    gateway_cpus, other_cpus = cpu_split()
    upstream, port = free_port(), free_port()
    turnout = [sys.executable, "-m", "gateway.cli"]
    mock = _start([*turnout, "mock-backend", "--port", str(upstream), "--first-token-ms", "0",
                   "--tokens-per-s", "0", "--output-tokens", "16"], other_cpus)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as cfg:
        cfg.write(_CONFIG.format(port=port, upstream=upstream))
    bare_port = free_port()
    procs = [mock]
    try:
        gateway = _start([*turnout, "serve", "--config", cfg.name], gateway_cpus)
        procs.append(gateway)
        bare = _start([sys.executable, "-m", "benchmarks.bare_aiohttp", "--port", str(bare_port)], gateway_cpus)
        procs.append(bare)
        wait_http(f"http://127.0.0.1:{upstream}/v1/models", mock, timeout=30)
        wait_http(f"http://127.0.0.1:{port}/health", gateway, timeout=30)
        wait_http(f"http://127.0.0.1:{bare_port}/health", bare, timeout=30)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        state = asyncio.run(_cache_state(url))
        if state != "hit-exact":
            raise RuntimeError(f"the repeated body was not an exact hit (x-turnout-cache: {state})")
        hit = _wrk(url, _HIT_LUA, seconds, connections, other_cpus)
        miss = _wrk(url, _MISS_LUA, seconds, connections, other_cpus)
        floor = _wrk(f"http://127.0.0.1:{bare_port}/v1/chat/completions", _HIT_LUA, seconds, connections, other_cpus)
    finally:
        for proc in procs:
            _stop(proc)
        os.unlink(cfg.name)
    return {"hit": hit, "miss": miss, "floor": floor, "hit_check": state, **_ratios(hit, miss, floor),
            "seconds": seconds,
            "connections": connections, "gateway_cpus": gateway_cpus, "load_cpus": other_cpus,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _ratios(hit: dict[str, Any], miss: dict[str, Any], floor: dict[str, Any]) -> dict[str, float]:
    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return round(a["requests_per_s"] / b["requests_per_s"], 2) if b["requests_per_s"] else 0.0

    return {"hit_over_miss": ratio(hit, miss), "floor_over_miss": ratio(floor, miss),
            "hit_over_floor_cost": ratio(floor, hit)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    result = run(args.seconds, args.connections)
    sys.stderr.write(f"hit {result['hit']['requests_per_s']:.0f} req/s, miss "
                     f"{result['miss']['requests_per_s']:.0f} req/s: x{result['hit_over_miss']}; bare aiohttp "
                     f"{result['floor']['requests_per_s']:.0f} req/s: x{result['floor_over_miss']} over the miss\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
