"""Hedged requests: after a delay, a duplicate attempt on another deployment; the first to
succeed wins and the other is cancelled.

``race(primary, secondary, delay, may_hedge, discard)`` starts ``primary()``; if it has not
finished after ``delay`` seconds and ``may_hedge()`` says yes (the hedge budget), it starts
``secondary()``. The first *successful* result wins; if one fails the other is awaited; if both
fail the last error is raised (all errors go to ``on_error``). Losers are cancelled; a loser
that finished with a value anyway is handed to ``discard`` (a stream to close). For streams
the attempts return after the first chunk, so "first to succeed" is "first token".
Cancellation of the caller cancels both attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Discard = Callable[[Any], Awaitable[None]]


@dataclass(slots=True)
class RaceResult(Generic[T]):
    value: T
    winner: int  # 0: primary, 1: the hedge
    hedged: bool


async def race(
    primary: Callable[[], Coroutine[Any, Any, T]], secondary: Callable[[], Coroutine[Any, Any, T]],
    delay: float, may_hedge: Callable[[], bool], discard: Discard | None,
    on_error: Callable[[BaseException], None],
) -> RaceResult[T]:
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(primary())]
    won: list[asyncio.Task[T]] = []
    try:
        done, _ = await asyncio.wait(tasks, timeout=delay)
        if done or not may_hedge():
            won.append(tasks[0])
            return RaceResult(await tasks[0], 0, False)
        tasks.append(loop.create_task(secondary()))
        result = await _first_success(tasks, on_error)
        won.append(tasks[result.winner])
        return result
    finally:
        await _cancel_losers(tasks, won, discard)


async def _first_success(tasks: list[asyncio.Task[T]], on_error: Callable[[BaseException], None]) -> RaceResult[T]:
    pending: set[asyncio.Task[T]] = set(tasks)
    last: BaseException | None = None
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in sorted(done, key=tasks.index):
            exc = task.exception()
            if exc is None:
                return RaceResult(task.result(), tasks.index(task), True)
            if pending:
                on_error(exc)  # the last error is re-raised below, the caller records it
            last = exc
    assert last is not None
    raise last


async def _cancel_losers(tasks: list[asyncio.Task[T]], won: list[asyncio.Task[T]], discard: Discard | None) -> None:
    """Cancel unfinished attempts; close values that finished but lost."""
    for task in tasks:
        if not task.done():
            task.cancel()
    results = await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
    for task, result in zip(tasks, results, strict=True):
        if task in won or task.cancelled() or isinstance(result, BaseException):
            continue
        if discard is not None:
            await discard(result)
