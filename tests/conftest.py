"""Shared fixtures: offline environment, a real mock upstream on loopback, and a real gateway
server on loopback built from a YAML snippet."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from backends.mock_server import MockServerHandle, start_mock_server
from configs import GatewayConfig, load_text
from configs.environment import prepare_offline_environment
from configs.schema import MockSpec
from gateway.app import create_app

prepare_offline_environment()

GatewayFactory = Callable[[str], Awaitable[str]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http_blocking(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """``wait_http`` for code with no event loop running (tests driving OS processes); fails
    early if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            threading.Event().wait(0.05)  # blocking by design: nothing else runs meanwhile
    raise TimeoutError(url)


async def wait_http(url: str, within: float = 30.0) -> None:
    """Poll ``url`` until it answers below 500 (a server process finished starting)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not come up within {within:g}s")


@pytest.fixture
async def mock_upstream() -> AsyncIterator[MockServerHandle]:
    handle = await start_mock_server(spec=MockSpec(output_tokens=12), model="upstream-model")
    try:
        yield handle
    finally:
        await handle.close()


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayFactory]:
    """``await gateway(yaml_text)`` → base URL of a real gateway server on loopback."""
    servers: list[TestServer] = []

    async def start(yaml_text: str) -> str:
        cfg: GatewayConfig = load_text(yaml_text, "test.yaml")
        app: web.Application = create_app(cfg)
        server = TestServer(app, host="127.0.0.1", port=free_port())
        await server.start_server()  # TestServer enables handler_cancellation itself
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.close()


def openai_yaml(upstream_url: str, extra_models: str = "", extra_backends: str = "") -> str:
    return f"""
backends:
  up:
    kind: openai
    url: "{upstream_url}"
    model: upstream-model
    timeouts: {{connect: 1s, first_token: 2s, idle: 2s, total: 5s}}
  sim:
    kind: mock
    model: sim-model
    output_tokens: 8
{extra_backends}
models:
  chat:
    deployments: [up]
  sim:
    deployments: [sim]
  embed:
    type: embedding
    deployments: [up]
{extra_models}
"""
