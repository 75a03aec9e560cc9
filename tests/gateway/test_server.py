"""The real command lines: ``turnout serve`` (workers, SIGTERM grace, SIGHUP reload),
``turnout check-config`` and ``turnout mock-backend`` as separate processes on loopback."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from configs import load_text
from gateway.server import restart_only_changes
from tests.conftest import free_port, wait_http

TURNOUT = [sys.executable, "-m", "gateway.cli"]
CHAT = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}


def _config(mock_port: int, port: int, extra_model: str = "") -> str:
    return f"""
server: {{host: 127.0.0.1, port: {port}, grace_period: 5s}}
backends:
  up: {{kind: openai, url: "http://127.0.0.1:{mock_port}", model: mock}}
  sim: {{kind: mock, first_token_ms: 600, output_tokens: 4}}
models:
  fast: {{deployments: [up]}}
  slow: {{deployments: [sim]}}
{extra_model}
"""


@pytest.fixture
async def mock_process() -> AsyncIterator[int]:
    port = free_port()
    proc = subprocess.Popen([*TURNOUT, "mock-backend", "--port", str(port), "--model", "mock"])
    try:
        await wait_http(f"http://127.0.0.1:{port}/health")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _start_gateway(config: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([*TURNOUT, "serve", "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers)])
    base = f"http://127.0.0.1:{port}"
    await wait_http(f"{base}/health")
    return proc, base


def test_check_config_cli(tmp_path: Path) -> None:
    ok = subprocess.run([*TURNOUT, "check-config", "configs/default.yaml"], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {deployments: [ghost]}\n")
    out = subprocess.run([*TURNOUT, "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"{bad}: models.m.deployments[0]: unknown backend 'ghost'" in out.stderr


async def test_workers_serve_and_sigterm_finishes_in_flight(tmp_path: Path, mock_process: int) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(_config(mock_process, 0))
    proc, base = await _start_gateway(config, workers=2)
    try:
        async with aiohttp.ClientSession() as s:
            results = await asyncio.gather(*(
                s.post(f"{base}/v1/chat/completions", json={**CHAT, "model": "fast"}) for _ in range(40)))
            assert all(r.status == 200 for r in results)
            for r in results:
                r.release()
            in_flight = asyncio.ensure_future(s.post(f"{base}/v1/chat/completions", json=CHAT))
            await asyncio.sleep(0.2)  # the slow model takes 600 ms to its first token
            proc.send_signal(signal.SIGTERM)
            resp = await in_flight
            assert resp.status == 200  # in-flight request finished during the grace period
            assert (await resp.json())["choices"][0]["message"]["content"]
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_sighup_reloads_config(tmp_path: Path, mock_process: int) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(_config(mock_process, 0))
    proc, base = await _start_gateway(config)
    try:
        async with aiohttp.ClientSession() as s:
            in_flight = asyncio.ensure_future(s.post(f"{base}/v1/chat/completions", json=CHAT))
            await asyncio.sleep(0.1)
            config.write_text(_config(mock_process, 0, "  added: {deployments: [up]}"))
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            ids: list[str] = []
            while time.monotonic() < deadline and "added" not in ids:
                async with s.get(f"{base}/v1/models") as r:
                    ids = [m["id"] for m in (await r.json())["data"]]
                await asyncio.sleep(0.1)
            assert "added" in ids
            resp = await in_flight
            assert resp.status == 200  # started before the reload, finished on the old runtime
            config.write_text("models: {broken")  # an invalid file keeps the running config
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            async with s.post(f"{base}/v1/chat/completions", json={**CHAT, "model": "added"}) as r:
                assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_reload_names_the_settings_that_need_a_restart() -> None:
    base = "backends: {sim: {kind: mock}}\nmodels: {chat: {deployments: [sim]}}\n"
    old = load_text(base)
    assert restart_only_changes(old, load_text(base.replace("chat", "other"))) == []  # models reload
    new = load_text(base + 'server: {port: 9999}\nredis: {url: "redis://127.0.0.1:6379/1"}\n'
                    "cache: {store: memory}\n")
    assert restart_only_changes(old, new) == ["server", "redis_url", "cache (added or removed)"]
