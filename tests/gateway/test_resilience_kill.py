"""Killing one of two real backend processes mid-load (must-show).

Two ``turnout mock-backend`` processes on loopback behind a real gateway server; a closed-loop
load of non-streaming requests runs throughout. One process is SIGKILLed: clients see no
errors (requests in flight on it are retried on the other before anything was sent), its
breaker opens; when it is started again on the same port traffic returns to it within the
breaker's half-open interval.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.conftest import GatewayFactory, free_port, wait_http

RESET_S = 1.0


def spawn(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "mock-backend", "--port", str(port), "--model", "m",
         "--first-token-ms", "5", "--output-tokens", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@dataclass
class Load:
    results: list[tuple[float, int, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0


async def drive(session: aiohttp.ClientSession, url: str, load: Load, workers: int = 16) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}

    async def worker() -> None:
        while not load.stop.is_set():
            load.in_flight += 1
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                    await resp.read()
                    load.results.append((time.monotonic(), resp.status, resp.headers.get("x-turnout-deployment", "")))
            finally:
                load.in_flight -= 1

    await asyncio.gather(*(worker() for _ in range(workers)))


@pytest.fixture
async def processes() -> AsyncIterator[dict[str, tuple[int, list[subprocess.Popen[bytes]]]]]:
    procs = {name: (port, [spawn(port)]) for name, port in (("a", free_port()), ("b", free_port()))}
    yield procs
    for _, plist in procs.values():
        for p in plist:
            if p.poll() is None:
                p.terminate()
                p.wait(5)


async def test_kill_one_backend_mid_load(
    gateway: GatewayFactory, processes: dict[str, tuple[int, list[subprocess.Popen[bytes]]]],
) -> None:
    (port_a, procs_a), (port_b, _) = processes["a"], processes["b"]
    timeouts = "timeouts: {connect: 500ms, first_token: 1s, idle: 1s, total: 2s}"
    url = await gateway(f"""
backends:
  a: {{kind: openai, url: "http://127.0.0.1:{port_a}", model: m, {timeouts}}}
  b: {{kind: openai, url: "http://127.0.0.1:{port_b}", model: m, {timeouts}}}
models:
  chat:
    deployments: [a, b]
    retries: 2
    breaker: {{failures: 3, reset: {RESET_S}s}}
""")
    async with aiohttp.ClientSession() as session:
        await wait_http(f"http://127.0.0.1:{port_a}/health", within=15)
        await wait_http(f"http://127.0.0.1:{port_b}/health", within=15)
        load = Load()
        driver = asyncio.get_running_loop().create_task(drive(session, url, load))
        await asyncio.sleep(1.0)
        in_flight_at_kill = load.in_flight
        killed_at = time.monotonic()
        os.kill(procs_a[0].pid, signal.SIGKILL)
        procs_a[0].wait(5)
        opened = await breaker_state(session, url, "a", "open", within=2.0)
        await asyncio.sleep(1.0)
        procs_a.append(spawn(port_a))
        await wait_http(f"http://127.0.0.1:{port_a}/health", within=15)
        ready_at = time.monotonic()
        await asyncio.sleep(RESET_S + 1.5)
        load.stop.set()
        await driver

    errors = [r for r in load.results if r[1] != 200]
    assert len(errors) <= in_flight_at_kill, errors[:5]
    assert opened - killed_at < 2.0
    down = [r for r in load.results if opened < r[0] < ready_at]
    assert down and all(r[2] == "b" for r in down)  # nothing routed to the dead one
    back = [r[0] for r in load.results if r[0] > ready_at and r[2] == "a"]
    assert back, "traffic never returned to the restarted backend"
    assert back[0] - ready_at <= RESET_S + 0.5, back[0] - ready_at
    after = [r for r in load.results if r[0] > back[0] + 0.2]
    assert sum(r[2] == "a" for r in after) / len(after) > 0.3  # and it takes its share again
    sys.stdout.write(f"\nkill test: {len(load.results)} requests, {len(errors)} errors {errors[:3]}, in flight at kill "
                     f"{in_flight_at_kill}, breaker open after {opened - killed_at:.3f}s, traffic back "
                     f"{back[0] - ready_at:.3f}s after restart\n")


async def breaker_state(session: aiohttp.ClientSession, url: str, name: str, want: str, within: float) -> float:
    end = time.monotonic() + within
    while time.monotonic() < end:
        async with session.get(f"{url}/v1/turnout/status") as resp:
            if (await resp.json())["deployments"][name]["breaker"] == want:
                return time.monotonic()
        await asyncio.sleep(0.01)
    raise AssertionError(f"breaker of {name} never became {want}")
