"""Hedged requests through the whole gateway (must-show).

Two deployments, each with a heavy tail: 5% of requests wait 2 s before their first token
(the rest ~10 ms). The same streaming load runs without and with ``hedge: {after: p99}``; the
client measures time to first token. (With a 5% tail, ``after: p95`` hedges ~5% of the normal
requests as well as the tail: ~10% extra, right at the budget, so p99 is the fitting quantile;
``max_delay`` is also the delay while a deployment has too few samples, i.e. during warm-up.)
With hedging p99 TTFT must be at most a third of the p99 without it, for at most 10% extra
backend requests.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.test_utils import TestServer

from backends.base import Backend, BackendRequest, BackendResponse, Chunk, Health
from configs import load_text
from gateway.app import create_app
from gateway.keys import RUNTIME
from tests.conftest import free_port

N = 600
CONCURRENCY = 12
SLOW_S = 2.0
TAIL = 0.05


class HeavyTail:
    """Wraps a backend: 5% of calls stall SLOW_S before anything comes back."""

    def __init__(self, inner: Backend, seed: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0
        self._rng = random.Random(seed)

    async def _stall(self) -> None:
        self.calls += 1
        await asyncio.sleep(SLOW_S if self._rng.random() < TAIL else 0.0)

    async def complete(self, req: BackendRequest) -> BackendResponse:
        await self._stall()
        return await self.inner.complete(req)

    async def stream(self, req: BackendRequest) -> AsyncIterator[Chunk]:
        await self._stall()
        async for chunk in self.inner.stream(req):
            yield chunk

    async def health(self) -> Health:
        return await self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


def config(hedge: str) -> str:
    return f"""
backends:
  a: {{kind: mock, model: m, first_token_ms: 10, output_tokens: 4}}
  b: {{kind: mock, model: m, first_token_ms: 10, output_tokens: 4}}
models:
  chat:
    deployments: [a, b]
    {hedge}
"""


async def measure(hedge: str) -> tuple[float, float, float]:
    """(p50, p99 TTFT in seconds, extra backend requests / requests)."""
    server = TestServer(create_app(load_text(config(hedge))), host="127.0.0.1", port=free_port())
    await server.start_server()
    runtime = server.app[RUNTIME].current
    wrapped = {n: HeavyTail(b, seed) for seed, (n, b) in enumerate(runtime.backends.items())}
    runtime.backends = wrapped
    ttfts: list[float] = []
    sem = asyncio.Semaphore(CONCURRENCY)
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        async with aiohttp.ClientSession() as session:
            async def one() -> None:
                async with sem:
                    t0 = time.perf_counter()
                    async with session.post(f"http://127.0.0.1:{server.port}/v1/chat/completions", json=body) as r:
                        assert r.status == 200
                        await r.content.readany()
                        ttfts.append(time.perf_counter() - t0)
                        await r.read()
            await asyncio.gather(*(one() for _ in range(N)))
    finally:
        await server.close()
    ttfts.sort()
    extra = sum(b.calls for b in wrapped.values()) / N - 1
    return ttfts[N // 2], ttfts[int(N * 0.99)], extra


async def test_hedging_cuts_p99_ttft() -> None:
    base_p50, base_p99, base_extra = await measure("")
    p50, p99, extra = await measure("hedge: {after: p99, budget: 0.1, max_delay: 500ms}")
    sys.stdout.write(
        f"\nhedging: without p50 {base_p50 * 1000:.0f} ms p99 {base_p99 * 1000:.0f} ms extra {base_extra:.1%}; "
        f"with p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms extra {extra:.1%}\n",
    )
    assert base_p99 >= SLOW_S * 0.9  # the tail is there without hedging
    assert p99 <= base_p99 / 3
    assert extra <= 0.10
