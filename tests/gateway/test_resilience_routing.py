"""Balancing and resilience features through the gateway: load-aware polling of vLLM /metrics,
prefix affinity, response headers, the status endpoint, deadlines, probes, fallback rules."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

import aiohttp

from backends.mock import LoadGauges
from backends.mock_server import start_mock_server
from configs.schema import MockSpec
from tests.conftest import GatewayFactory

TIMEOUTS = "timeouts: {connect: 500ms, first_token: 1s, idle: 1s, total: 2s}"


async def post(session: aiohttp.ClientSession, url: str, body: Mapping[str, object],
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, object]]:
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers or {}) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


def chat(content: str = "hi", **extra: object) -> dict[str, object]:
    return {"model": "chat", "messages": [{"role": "user", "content": content}], **extra}


async def test_load_aware_moves_traffic_away_from_long_queue(gateway: GatewayFactory) -> None:
    busy = await start_mock_server(spec=MockSpec(output_tokens=2), model="m", gauges=LoadGauges(waiting=40))
    idle = await start_mock_server(spec=MockSpec(output_tokens=2), model="m")
    try:
        url = await gateway(f"""
backends:
  busy: {{kind: vllm, url: "{busy.url}", model: m, {TIMEOUTS}}}
  idle: {{kind: vllm, url: "{idle.url}", model: m, {TIMEOUTS}}}
models:
  chat: {{deployments: [busy, idle], balance: load_aware, load: {{interval: 50ms, stale: 2s}}}}
""")
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(0.3)  # a few polls
            async with session.get(f"{url}/v1/turnout/status") as resp:
                status = await resp.json()
            assert status["deployments"]["busy"]["load"]["waiting"] == 40
            used = Counter([(await post(session, url, chat()))[1]["x-turnout-deployment"] for _ in range(40)])
            assert used["busy"] == 0 and used["idle"] == 40
            # the queue drains on busy and builds up on idle: traffic follows
            busy.state.gauges = LoadGauges(waiting=0)
            idle.state.gauges = LoadGauges(waiting=40)
            await asyncio.sleep(0.3)
            used = Counter([(await post(session, url, chat()))[1]["x-turnout-deployment"] for _ in range(40)])
            assert used["busy"] == 40
    finally:
        await busy.close()
        await idle.close()


async def test_stale_load_is_ignored(gateway: GatewayFactory) -> None:
    busy = await start_mock_server(spec=MockSpec(output_tokens=2), model="m", gauges=LoadGauges(waiting=40))
    idle = await start_mock_server(spec=MockSpec(output_tokens=2), model="m")
    try:
        url = await gateway(f"""
backends:
  busy: {{kind: vllm, url: "{busy.url}", model: m, {TIMEOUTS}}}
  idle: {{kind: vllm, url: "{idle.url}", model: m, {TIMEOUTS}}}
models:
  chat: {{deployments: [busy, idle], balance: load_aware, load: {{interval: 50ms, stale: 200ms}}}}
""")
        await asyncio.sleep(0.2)
        await busy.close()  # no more polls succeed: its old sample goes stale
        await asyncio.sleep(0.4)
        async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/turnout/status") as resp:
            status = await resp.json()
        assert status["deployments"]["busy"]["load"] is None
        assert status["deployments"]["idle"]["load"] is not None
    finally:
        await idle.close()


async def test_prefix_affinity_through_gateway(gateway: GatewayFactory) -> None:
    ups = [await start_mock_server(spec=MockSpec(output_tokens=2), model="m") for _ in range(3)]
    try:
        backends = "\n".join(
            f'  u{i}: {{kind: openai, url: "{u.url}", model: m, {TIMEOUTS}}}' for i, u in enumerate(ups))
        url = await gateway(f"""
backends:
{backends}
models:
  chat: {{deployments: [u0, u1, u2], balance: prefix_affinity}}
""")
        homes: dict[int, Counter[str]] = {}
        async with aiohttp.ClientSession() as session:
            for i in range(120):
                system = f"You are assistant number {i % 12}. " * 20
                body = {"model": "chat", "messages": [
                    {"role": "system", "content": system}, {"role": "user", "content": "question"},
                    {"role": "assistant", "content": "a"}, {"role": "user", "content": f"follow-up {i}"}]}
                _, headers, _ = await post(session, url, body)
                homes.setdefault(i % 12, Counter())[headers["x-turnout-deployment"]] += 1
        same = sum(c.most_common(1)[0][1] for c in homes.values())
        assert same / 120 >= 0.95
        assert len({c.most_common(1)[0][0] for c in homes.values()}) > 1
    finally:
        for u in ups:
            await u.close()


async def test_headers_fallback_by_class_and_deadline(gateway: GatewayFactory) -> None:
    small = await start_mock_server(spec=MockSpec(output_tokens=2, context_window=50), model="m")
    big = await start_mock_server(spec=MockSpec(output_tokens=2, context_window=100_000), model="m")
    slow = await start_mock_server(spec=MockSpec(output_tokens=2, first_token_ms=500), model="m")
    try:
        url = await gateway(f"""
backends:
  small: {{kind: openai, url: "{small.url}", model: m, {TIMEOUTS}}}
  big: {{kind: openai, url: "{big.url}", model: m, {TIMEOUTS}}}
  slow: {{kind: openai, url: "{slow.url}", model: m, {TIMEOUTS}}}
models:
  chat:
    deployments: [small]
    fallbacks: [{{model: big, on: [context_length]}}]
  big: {{deployments: [big]}}
  slowpoke: {{deployments: [slow], retries: 0}}
""")
        async with aiohttp.ClientSession() as session:
            status, headers, _ = await post(session, url, chat())
            assert status == 200 and headers["x-turnout-deployment"] == "small"
            assert headers["x-turnout-attempts"] == "1" and "x-turnout-fallback" not in headers
            status, headers, _ = await post(session, url, chat("long " * 400))
            assert status == 200 and headers["x-turnout-fallback"] == "big"
            assert headers["x-turnout-deployment"] == "big"
            status, _, body = await post(session, url, {**chat(), "model": "slowpoke"},
                                         {"x-turnout-timeout-ms": "100"})
            assert status == 504, body
        assert slow.state.stats.requests == 1  # the deadline is not retried
    finally:
        for h in (small, big, slow):
            await h.close()


async def test_active_probes_mark_down_and_up(gateway: GatewayFactory) -> None:
    a = await start_mock_server(spec=MockSpec(output_tokens=2), model="m")
    b = await start_mock_server(spec=MockSpec(output_tokens=2), model="m")
    try:
        url = await gateway(f"""
backends:
  a: {{kind: openai, url: "{a.url}", model: m, {TIMEOUTS}}}
  b: {{kind: openai, url: "{b.url}", model: m, {TIMEOUTS}}}
models:
  chat: {{deployments: [a, b], health: {{interval: 50ms, timeout: 500ms}}}}
""")
        async with aiohttp.ClientSession() as session:
            await a.close()  # a's /v1/models fails: the probe marks it down before any request
            await asyncio.sleep(0.3)
            async with session.get(f"{url}/v1/turnout/status") as resp:
                dep = (await resp.json())["deployments"]["a"]
            assert dep["probe_ok"] is False and dep["available"] is False
            used = Counter([(await post(session, url, chat()))[1]["x-turnout-deployment"] for _ in range(10)])
            assert used == {"b": 10}
    finally:
        await b.close()
