"""Load generation with ``wrk`` (C, epoll; far faster than any gateway measured here).

Closed loop: ``connections`` clients, each sends its next request when the previous answer
arrived. Open loop: each connection waits an exponential think time before each request, so
arrivals are Poisson at ``rate`` req/s in total (a superposition of per-connection Poisson
processes); choose connections well above rate × latency so a busy connection rarely delays an
arrival. The Lua ``done()`` hook prints one JSON line with the latency percentiles.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.procs import pinned

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,"mean_us":%.1f,"max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status, latency.mean,
    latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""
_POISSON = """
local counter = 0
setup = function(thread) counter = counter + 1; thread:set("seed", counter) end
init = function(args) math.randomseed(os.time() * 1000 + (seed or 0)) end
delay = function() return -math.log(1 - math.random()) * {mean_ms} end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    label: str
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    errors: int
    mode: str = "closed"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lua_script(body: bytes, headers: dict[str, str], path: str, rate: float | None, connections: int) -> str:
    lines = ['wrk.method = "POST"', f"wrk.path = {_lua_str(path)}", f"wrk.body = {_lua_str(body.decode())}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in headers.items()]
    script = "\n".join(lines) + "\n" + _DONE
    if rate is not None:
        script += _POISSON.replace("{mean_ms}", repr(connections / rate * 1000.0))
    return script


def _lua_str(text: str) -> str:
    return "[==[" + text + "]==]"


def run_wrk(label: str, base_url: str, body: bytes, connections: int, seconds: float, cpus: list[int],
            headers: dict[str, str] | None = None, path: str = "/v1/chat/completions",
            rate: float | None = None) -> LoadResult:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not found: run `python -m benchmarks setup` (apt-get install -y wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua_script(body, headers or {}, path, rate, connections))
    try:
        cmd = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", fh.name,
                      base_url], cpus)
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30)
        out = done.stdout
        if done.stderr.strip():
            raise RuntimeError(f"wrk ({label}): {done.stderr.strip()}")
    finally:
        Path(fh.name).unlink()
    return parse_wrk(label, out, connections, "open" if rate is not None else "closed")


def parse_wrk(label: str, out: str, connections: int, mode: str) -> LoadResult:
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary ({label}):\n{out}")
    d = orjson.loads(line[len("WRKJSON "):])
    seconds = d["duration_us"] / 1e6
    return LoadResult(
        label, connections, round(seconds, 2), d["requests"], round(d["requests"] / seconds, 1),
        d["p50_us"] / 1000, d["p90_us"] / 1000, d["p99_us"] / 1000, d["p999_us"] / 1000,
        round(d["mean_us"] / 1000, 3), d["socket_errors"] + d["non2xx"], mode)


@dataclass(frozen=True, slots=True)
class StreamResult:
    label: str
    samples: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    total_p50_ms: float
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _one_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      request: bytes) -> tuple[float, float]:
    """Send one streaming request on a keep-alive connection; (ttft, total) in seconds."""
    started = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(head.decode(errors="replace"))
    ttft = 0.0
    buf = b""
    while True:  # chunked SSE: the first bytes after the head carry the first event
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed mid-stream")
        if not ttft:
            ttft = time.perf_counter() - started
        buf = (buf + data)[-64:]
        if buf.endswith(b"0\r\n\r\n"):
            return ttft, time.perf_counter() - started


async def stream_probe(label: str, host: str, port: int, body: bytes, count: int,
                       headers: dict[str, str] | None = None) -> StreamResult:
    """Sequential streaming requests at concurrency 1 over one keep-alive connection (raw socket,
    so the client adds the same few µs to every target)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    ttfts: list[float] = []
    totals: list[float] = []
    errors = 0
    try:
        for _ in range(count):
            try:
                ttft, total = await _one_stream(reader, writer, request)
            except (RuntimeError, ConnectionError, asyncio.IncompleteReadError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            ttfts.append(ttft)
            totals.append(total)
    finally:
        writer.close()
    q = statistics.quantiles(ttfts, n=10) if len(ttfts) >= 10 else [0.0] * 9
    return StreamResult(label, len(ttfts), round(statistics.median(ttfts) * 1000, 3) if ttfts else 0.0,
                        round(q[8] * 1000, 3), round(statistics.median(totals) * 1000, 3) if totals else 0.0,
                        errors)
