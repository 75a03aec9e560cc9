"""Admin overhead benchmark: req/s through one gateway process with the admin layer off, on
with SQLite (in-process limits), and on with PostgreSQL + Redis (shared limits).

    python -m tests.admin.overhead [--seconds 5] [--concurrency 32]

Every request authenticates, passes RPM/TPM/concurrency/budget checks on both the key and the
tenant, settles, and writes a usage event. The mock backend answers at once, so the numbers
show gateway cost, not model time. Modes run interleaved, ``--rounds`` times; prints a markdown table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis

from tests.admin.cluster import ADMIN_KEY, Cluster
from tests.admin.conftest import REDIS_URL

BASE = """
backends:
  mock: {{kind: openai, url: "http://127.0.0.1:{mock_port}", model: mock-small}}
models:
  small: {{deployments: [mock], price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}}}
"""
SQLITE = """
admin: {{database: "sqlite:///{tmp}/admin.db", admin_key: {key}, usage: {{spill_dir: "{tmp}/spill"}}}}
"""
LIMITS = {"rpm": 10**8, "tpm": 10**10, "concurrency": 10**5, "budget_usd": 10**6}
CHAT = {"model": "small", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu() -> float:
    info = redis.Redis.from_url(REDIS_URL).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def drive(port: int, headers: dict[str, str], seconds: float, concurrency: int,
                pid: int = 0) -> tuple[float, float, float]:
    """(req/s, gateway CPU us per request, Redis server CPU us per request)."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker(end: float, counts: list[int]) -> None:
            while time.monotonic() < end:
                async with session.post(url, json=CHAT, headers=headers) as resp:
                    await resp.read()
                    counts.append(resp.status)

        warm: list[int] = []
        await asyncio.gather(*(worker(time.monotonic() + 1.0, warm) for _ in range(concurrency)))
        counts: list[int] = []
        cpu0, rcpu0 = cpu_seconds(pid), redis_cpu()
        start = time.monotonic()
        await asyncio.gather(*(worker(start + seconds, counts) for _ in range(concurrency)))
        elapsed = time.monotonic() - start
        cpu, rcpu = cpu_seconds(pid) - cpu0, redis_cpu() - rcpu0
        assert set(counts) == {200}, set(counts)
        n = len(counts)
        return n / elapsed, cpu / n * 1e6, rcpu / n * 1e6


async def provision(port: int) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    base = f"http://127.0.0.1:{port}/admin/v1"
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(f"{base}/tenants", json={"id": "bench", "limits": LIMITS}) as r:
            assert r.status in (201, 409), await r.text()  # 409: an earlier mode made it
        async with s.post(f"{base}/tenants/bench/keys", json={"limits": LIMITS}) as r:
            key = (await r.json())["key"]
    return {"Authorization": f"Bearer {key}"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="modes are interleaved; medians reported")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="turnout-overhead-"))
    cluster = Cluster(tmp, flush="1s")
    results: dict[str, list[float]] = {}
    cpus: dict[str, list[tuple[float, float]]] = {}
    try:
        cluster.start_mock()  # writes the PostgreSQL + Redis config
        shared = cluster.config_path.read_text()
        base = BASE.format(mock_port=cluster.mock_port)
        no_redis = "\n".join(line for line in shared.splitlines() if not line.startswith("redis:"))
        modes = (("off", base),
                 ("sqlite, in-process limits", base + SQLITE.format(tmp=tmp, key=ADMIN_KEY)),
                 ("postgresql, in-process limits", no_redis),
                 ("postgresql + redis (shared limits)", shared))
        for _ in range(args.rounds):
            for name, text in modes:
                cluster.config_path.write_text(text)
                port = cluster.start_gateway()
                headers = {} if name == "off" else asyncio.run(provision(port))
                pid = cluster.gateways[port].pid
                rps, cpu, rcpu = asyncio.run(drive(port, headers, args.seconds, args.concurrency, pid))
                results.setdefault(name, []).append(rps)
                cpus.setdefault(name, []).append((cpu, rcpu))
                cluster.stop_gateway(port)
    finally:
        cluster.close()
    off = statistics.median(results["off"])
    off_cpu = statistics.median(c for c, _ in cpus["off"])
    sys.stdout.write("| admin layer | req/s (median) | runs | vs off | gateway CPU us/req | "
                     "vs off | redis-server CPU us/req |\n|---|---|---|---|---|---|---|\n")
    for name, runs in results.items():
        med = statistics.median(runs)
        cpu = statistics.median(c for c, _ in cpus[name])
        rcpu = statistics.median(r for _, r in cpus[name])
        sys.stdout.write(f"| {name} | {med:.0f} | {', '.join(f'{r:.0f}' for r in runs)} | "
                         f"{100 * (med - off) / off:+.1f}% | {cpu:.0f} | {100 * (cpu - off_cpu) / off_cpu:+.1f}% | "
                         f"{rcpu:.0f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
