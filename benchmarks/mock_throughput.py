"""Throughput of the standalone mock server (``turnout mock-backend``) on one core.

    python -m benchmarks.mock_throughput [--seconds 5] [--connections 64] [--json out.json]

Starts the server in a subprocess pinned to one CPU (the last one, when the machine has more),
drives it with ``wrk`` (POST of a small chat body, keep-alive) pinned to the other CPUs, and
reports requests/s and latency. Without ``wrk`` on PATH it falls back to a built-in asyncio
load generator, which is itself CPU-bound and so gives a lower bound; the output says which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

BODY = {"model": "mock", "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16}
_LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpus() -> tuple[list[int], list[int]]:
    """(server CPUs, load-generator CPUs)."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[-1:], cpus[:-1] or cpus) if len(cpus) > 1 else (cpus, cpus)


def _start_server(port: int, cpu: list[int]) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "backends.mock_server", "--port", str(port)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(map(str, cpu)), *cmd]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # the "listening on" line: ready
    return proc


def _run_wrk(url: str, body: bytes, seconds: int, connections: int, cpus: list[int]) -> dict[str, object]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(_LUA.format(body=body.decode()))
    cmd = ["wrk", f"-t{min(len(cpus), 2)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", lua.name, url]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(lua.name)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    return {"tool": "wrk", "requests_per_s": float(rps.group(1)) if rps else None,
            "p50": p50.group(1) if p50 else None, "p99": p99.group(1) if p99 else None, "raw": out}


async def _one_connection(port: int, request: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        counts[0] += 1
    writer.close()


async def _builtin_load(port: int, body: bytes, seconds: int, connections: int) -> dict[str, object]:
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    counts = [0]
    stop_at = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(_one_connection(port, request, stop_at, counts) for _ in range(connections)))
    return {"tool": "builtin (client-bound lower bound)", "requests_per_s": counts[0] / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    server_cpus, load_cpus = _cpus()
    port = _free_port()
    proc = _start_server(port, server_cpus)
    body = orjson.dumps(BODY)
    try:
        sys.stdout.write(f"mock server on CPU {server_cpus}, load on CPU {load_cpus}, {args.seconds}s, "
                         f"{args.connections} connections\n")
        sys.stdout.flush()
        if shutil.which("wrk"):
            result = _run_wrk(f"http://127.0.0.1:{port}/v1/chat/completions", body, args.seconds,
                              args.connections, load_cpus)
        else:
            result = asyncio.run(_builtin_load(port, body, args.seconds, args.connections))
    finally:
        proc.terminate()
        proc.wait(10)
    result.update(seconds=args.seconds, connections=args.connections, when=time.strftime("%Y-%m-%dT%H:%M:%S"))
    sys.stdout.write(f"{result['tool']}: {result['requests_per_s']} req/s "
                     f"(p50 {result.get('p50')}, p99 {result.get('p99')})\n")
    if args.json:
        args.json.write_text(orjson.dumps({k: v for k, v in result.items() if k != "raw"}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
