"""The JSON access log: one line per request through a real gateway, levels, bounded buffer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from backends.mock_server import MockServerHandle
from configs.observability import AccessLogConfig
from gateway import access_log
from gateway.access_log import AccessLog
from tests.conftest import GatewayFactory, openai_yaml


async def _traffic(base: str) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/chat/completions", json=body, headers={"x-request-id": "req-1"}) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/v1/chat/completions", json={**body, "stream": True}) as resp:
            await resp.read()
        async with http.post(f"{base}/v1/chat/completions", json={**body, "model": "nope"}) as resp:
            assert resp.status == 404


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


async def _lines(path: Path) -> list[dict[str, Any]]:
    for _ in range(50):  # the writer flushes every FLUSH_S
        if _read(path):
            await asyncio.sleep(access_log.FLUSH_S * 2)
            break
        await asyncio.sleep(0.05)
    return [orjson.loads(line) for line in _read(path).splitlines()]


@pytest.mark.parametrize(("level", "statuses"), [("info", [200, 200, 404]), ("warning", [404])])
async def test_one_json_line_per_request(gateway: GatewayFactory, mock_upstream: MockServerHandle, tmp_path: Path,
                                         level: str, statuses: list[int]) -> None:
    log = tmp_path / "access.jsonl"
    base = await gateway(openai_yaml(mock_upstream.url)
                         + f"\nobservability: {{access_log: {{level: {level}, path: '{log}'}}}}\n")
    await _traffic(base)
    lines = await _lines(log)
    assert [line["status"] for line in lines] == statuses
    if level == "info":
        first, streamed, missing = lines
        assert first["request_id"] == "req-1" and first["model"] == "chat" and first["deployment"] == "up"
        assert first["completion_tokens"] == 12 and first["prompt_tokens"] > 0 and first["stream"] is False
        assert isinstance(first["latency_ms"], float) and first["latency_ms"] >= first["upstream_ms"] > 0
        assert streamed["stream"] is True and streamed["cache"] is None and streamed["attempts"] == 1
        assert 0 < streamed["ttft_ms"] <= streamed["latency_ms"] and "ttft_ms" not in first
        assert missing["model"] == "none" and missing["deployment"] is None


def test_buffer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log, "MAX_BUFFER", 3)

    class _Req:
        method, path = "POST", "/v1/chat/completions"
        headers: dict[str, str] = {}

    from gateway.metrics import Observation

    log = AccessLog(AccessLogConfig(enabled=True))
    for _ in range(5):
        log.add(_Req(), Observation(), "t", 200, 0.01, "r")  # type: ignore[arg-type]
    assert log.dropped == 2
    assert log.render().count(b"\n") == 3
