"""Breakers.run: the fast path must count exactly like pybreaker's own context manager."""

from __future__ import annotations

import asyncio

import pytest

from configs.resilience import BreakerPolicy
from routing.breaker import Breakers
from routing.errors import BreakerOpen


class Fault(Exception):
    pass


class ClientMistake(Exception):
    pass


def breakers(failures: int = 3, reset: float = 60.0) -> Breakers:
    return Breakers({"a": BreakerPolicy(failures=failures, reset=reset)},
                    is_failure=lambda exc: not isinstance(exc, ClientMistake))


async def _ok() -> str:
    return "ok"


async def _fail(exc: Exception) -> str:
    raise exc


async def test_consecutive_failures_open_the_breaker() -> None:
    b = breakers(failures=3)
    for _ in range(3):
        with pytest.raises(Fault):
            await b.run("a", lambda: _fail(Fault()))
    assert b.state("a") == "open" and not b.available("a")
    with pytest.raises(BreakerOpen):
        await b.run("a", _ok)


async def test_success_resets_the_count_and_excluded_errors_do_not_count() -> None:
    b = breakers(failures=3)
    for _ in range(2):
        with pytest.raises(Fault):
            await b.run("a", lambda: _fail(Fault()))
    assert b.failures("a") == 2
    assert await b.run("a", _ok) == "ok"
    assert b.failures("a") == 0
    for _ in range(5):
        with pytest.raises(ClientMistake):
            await b.run("a", lambda: _fail(ClientMistake()))
    assert b.state("a") == "closed" and b.failures("a") == 0


async def test_concurrent_success_after_a_counted_failure_resets() -> None:
    b = breakers(failures=2)
    release = asyncio.Event()

    async def slow_ok() -> str:
        await release.wait()
        return "ok"

    pending = asyncio.ensure_future(b.run("a", slow_ok))  # starts on the fast path
    await asyncio.sleep(0)
    with pytest.raises(Fault):
        await b.run("a", lambda: _fail(Fault()))
    assert b.failures("a") == 1
    release.set()
    assert await pending == "ok"
    assert b.failures("a") == 0


async def test_cancellation_is_not_a_failure() -> None:
    b = breakers(failures=1)
    task = asyncio.ensure_future(b.run("a", lambda: asyncio.sleep(10)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.state("a") == "closed" and b.failures("a") == 0
