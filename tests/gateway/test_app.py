"""App lifetimes: bookkeeping of requests still in flight at shutdown completes before any
plug-in context closes its store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from configs import load_text
from gateway.app import create_app
from gateway.interfaces import Estimate, Outcome, Principal, Ticket
from gateway.keys import ADMISSION
from tests.conftest import free_port

CONFIG = """
backends:
  sim: {kind: mock, first_token_ms: 300, output_tokens: 4}
models:
  slow: {deployments: [sim]}
"""


class SlowTicket:
    """Settles through background work of its own, as admin's Redis quota does."""

    def __init__(self, events: list[str], work: set[asyncio.Task[None]]) -> None:
        self.events = events
        self.work = work

    def settle(self, outcome: Outcome) -> None:
        async def slow() -> None:
            await asyncio.sleep(0.2)
            self.events.append(f"settled {outcome.status}")

        self.work.add(asyncio.get_running_loop().create_task(slow()))

    def release(self, status: int) -> None:
        self.events.append(f"released {status}")


class RecordingAdmission:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.work: set[asyncio.Task[None]] = set()

    def admit_now(self, principal: Principal, estimate: Estimate) -> Ticket | None:
        return None  # always the awaited path

    async def admit(self, principal: Principal, estimate: Estimate) -> Ticket:
        self.events.append(f"admitted {estimate.model}")
        return SlowTicket(self.events, self.work)


async def test_in_flight_bookkeeping_drains_before_plugin_contexts_close() -> None:
    """In-flight requests finish (and settle their tickets) before a plug-in's context closes,
    so the plug-in can drain the settle work it started before closing its store."""
    events: list[str] = []
    app = create_app(load_text(CONFIG))
    admission = app[ADMISSION] = RecordingAdmission(events)

    async def plugin_store(app: web.Application) -> AsyncIterator[None]:
        yield
        await asyncio.gather(*admission.work)
        events.append("store closed")

    app.cleanup_ctx.insert(1, plugin_store)  # where a plug-in's context sits (after core)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as s:
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
        request = asyncio.ensure_future(s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body))
        await asyncio.sleep(0.1)  # the request is in flight (300 ms to its first token)
        await runner.cleanup()
        resp = await request
        assert resp.status == 200
        resp.release()
    assert events == ["admitted slow", "settled 200", "store closed"]
