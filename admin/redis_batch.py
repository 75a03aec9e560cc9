"""Automatic pipelining of Lua script calls to Redis.

Every script call made during one event-loop iteration is sent in a single non-transactional
pipeline (one round trip, one write syscall) as ``EVALSHA``. Each script still runs atomically
on the server; only the transport is shared. Under load this turns N concurrent admissions
into one round trip instead of N. If Redis lost its script cache (restart, SCRIPT FLUSH), the
scripts are loaded again and the affected calls retried once.

A call nobody waits on (a settle: the request has been answered) may be deferred by up to
``defer`` seconds: it rides along with the next call that is sent at once (an admission), or
goes on its own when the time is up. Under load that spares a round trip, two system calls and
a pipeline per request; calls still reach Redis in the order they were made.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

_Call = tuple[str, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, redis: Any, scripts: dict[str, str]) -> None:
        self._redis = redis
        self._sources = {hashlib.sha1(src.encode()).hexdigest(): src for src in scripts.values()}
        self.sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in scripts.items()}
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._soon = False  # a flush is scheduled for this loop iteration
        self._timer: asyncio.TimerHandle | None = None  # a flush is scheduled for deferred calls
        self.round_trips = 0

    def call(self, name: str, keys: Sequence[Any], args: Sequence[Any], *, defer: float = 0.0) -> asyncio.Future[Any]:
        """Send ``name`` with the calls of this loop iteration, or within ``defer`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((self.sha[name], keys, args, future))
        if defer <= 0:
            if not self._soon:
                self._soon = True
                loop.call_soon(self._flush)
        elif self._timer is None and not self._soon:
            self._timer = loop.call_later(defer, self._flush)
        return future

    async def drain(self) -> None:
        """Wait for every call made so far (and any made meanwhile) to get its answer."""
        while self._pending or self._tasks:
            if self._pending:
                self._flush()  # deferred calls too: nobody waits for the timer
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
            if any(isinstance(r, NoScriptError) for r in results):
                for sha, source in self._sources.items():
                    await self._redis.script_load(source)
                    assert sha  # the server computes the same SHA1
                retry = [c for c, r in zip(batch, results, strict=True) if isinstance(r, NoScriptError)]
                again = dict(zip((id(c) for c in retry), await self._execute(retry), strict=True))
                results = [again.get(id(c), r) for c, r in zip(batch, results, strict=True)]
        except Exception as exc:  # connection trouble: every caller sees it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        self.round_trips += 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for sha, keys, args, _ in batch:
                pipe.evalsha(sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results
