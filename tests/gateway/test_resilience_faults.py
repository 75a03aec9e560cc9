"""Fault injection through the whole gateway: two real mock upstreams on loopback, one failing.

Must-show: with one of two deployments failing (500s, resets, hangs, streams that die before
their first token) at least 99.9% of 2,000 requests succeed; with every deployment down a clean
OpenAI-style 503 arrives within 50 ms once the breakers are open.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from backends.mock_server import MockServerHandle, start_mock_server
from configs.schema import MockSpec
from tests.conftest import GatewayFactory

N = 2000
CONCURRENCY = 32


def two_backend_yaml(good: str, bad: str, extra: str = "") -> str:
    # Generous enough that a loaded CI machine never times out the good deployment; a hang on
    # the bad one still costs only first_token per attempt until its breaker opens.
    timeouts = "timeouts: {connect: 500ms, first_token: 1s, idle: 2s, total: 3s}"
    return f"""
backends:
  good: {{kind: openai, url: "{good}", model: m, {timeouts}}}
  bad: {{kind: openai, url: "{bad}", model: m, {timeouts}}}
models:
  chat:
    deployments: [good, bad]
    retries: 2
    breaker: {{failures: 3, reset: 1s}}
{extra}
"""


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[MockServerHandle, MockServerHandle]]:
    good = await start_mock_server(spec=MockSpec(output_tokens=4), model="m")
    bad = await start_mock_server(spec=MockSpec(output_tokens=4), model="m")
    yield good, bad
    await good.close()
    await bad.close()


async def one(session: aiohttp.ClientSession, url: str, stream: bool) -> tuple[int, str]:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        text = await resp.text()
        if resp.status == 200 and stream and "[DONE]" not in text:
            return 599, resp.headers.get("x-turnout-deployment", "")
        return resp.status, resp.headers.get("x-turnout-deployment", "")


async def load(url: str, n: int, stream: bool) -> Counter[int]:
    sem = asyncio.Semaphore(CONCURRENCY)
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession() as session:
        async def run() -> None:
            async with sem:
                status, _ = await one(session, url, stream)
                statuses[status] += 1
        await asyncio.gather(*(run() for _ in range(n)))
    return statuses


@pytest.mark.parametrize(("mode", "stream"), [
    ("http_500", False), ("reset", False), ("timeout", False), ("reset", True), ("timeout", True),
])
async def test_one_failing_deployment_999_of_2000_succeed(
    gateway: GatewayFactory, upstreams: tuple[MockServerHandle, MockServerHandle], mode: str, stream: bool,
) -> None:
    good, bad = upstreams
    bad.state.set_spec(MockSpec(output_tokens=4, fail_mode=mode))
    url = await gateway(two_backend_yaml(good.url, bad.url))
    started = time.perf_counter()
    statuses = await load(url, N, stream)
    ok = statuses[200] / N
    sys.stdout.write(f"\n{mode} stream={stream}: {statuses[200]}/{N} ok, {bad.state.stats.requests} to the bad one\n")
    assert ok >= 0.999, (mode, stream, statuses, f"{time.perf_counter() - started:.1f}s")
    assert bad.state.stats.requests < N / 4  # the breaker kept traffic off the failing one


async def test_all_down_fails_fast_with_503(
    gateway: GatewayFactory, upstreams: tuple[MockServerHandle, MockServerHandle],
) -> None:
    good, bad = upstreams
    for h in upstreams:
        h.state.set_spec(MockSpec(fail_mode="http_500"))
    url = await gateway(two_backend_yaml(good.url, bad.url))
    async with aiohttp.ClientSession() as session:
        for _ in range(10):  # open both breakers
            await one(session, url, False)
        async with session.get(f"{url}/v1/turnout/status") as resp:
            status = await resp.json()
        assert {d["breaker"] for d in status["deployments"].values()} == {"open"}
        for stream in (False, True):
            for _ in range(10):
                t0 = time.perf_counter()
                body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": stream}
                async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                    payload = await resp.json()
                    elapsed = time.perf_counter() - t0
                assert resp.status == 503
                assert payload["error"]["code"] == "no_healthy_deployment"
                assert elapsed < 0.05, elapsed
