"""Micro-batching of CPU-bound cache work in one worker thread, off the event loop.

``MicroBatcher(fn).submit(item)``: items that arrive while a batch is running in the worker are
queued and handed to ``fn`` together as the next batch (up to ``max_batch``), so N concurrent
callers cost about one ``fn`` call, not N. The event loop only enqueues, schedules and resolves
futures; ``fn`` runs in the worker. Several batchers may share one single-thread executor, so
all model code of a cache runs in one thread (no two threads fight over the GIL or the cores).

``BatchingEmbedder`` is a ``MicroBatcher`` over ``Embedder.encode`` plus a bounded LRU memo of
recent texts. ``aclose`` fails pending callers and stops the thread.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np

from cache.embedders import Embedder, Vectors

T = TypeVar("T")
R = TypeVar("R")


def worker_pool() -> ThreadPoolExecutor:
    """The single cache worker thread. Also caps BLAS at one thread for the process: the
    worker's matrices are small (a batch of pairs), where BLAS thread pools only spin against
    the event loop for the same cores (measured: 36 ms instead of 1.5 ms per batch of 32 on a
    loaded 2-core machine)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnout-cache", initializer=_one_thread)


def _one_thread() -> None:
    """Runs in the worker thread: OpenMP's thread count is per calling thread, so the
    process-wide BLAS limit above does not reach faiss's OpenMP team. Unlimited, that team
    spun on the second core after each search (~200 us of CPU per lookup besides the
    worker's, taken from the event loop and other processes)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


class MicroBatcher(Generic[T, R]):
    """``fn(items)`` must return one result per item, in order; it runs in ``pool``."""

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], pool: ThreadPoolExecutor,
                 max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        self._fn = fn
        self._pool = pool
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self.batches = 0  # number of fn calls, for tests and benchmarks

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, fut))
        if not self._running:
            self._running = True
            loop.call_soon(self._kick, loop)  # let same-tick callers join this batch
        return await fut

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        batch = [(t, f) for t, f in batch if not f.done()]
        if not batch:
            self._running = bool(self._pending)
            if self._pending:
                loop.call_soon(self._kick, loop)
            return
        try:
            work = loop.run_in_executor(self._pool, self._fn, [t for t, _ in batch])
        except RuntimeError as exc:  # pool shut down
            self._running = False
            for _, fut in batch:
                fut.set_exception(exc)
            return
        work.add_done_callback(lambda done: self._finish(loop, batch, done))

    def _finish(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[T, asyncio.Future[R]]],
                done: asyncio.Future[Sequence[R]]) -> None:
        self.batches += 1
        exc = None if done.cancelled() else done.exception()
        results = done.result() if exc is None and not done.cancelled() else None
        for i, (_, fut) in enumerate(batch):
            if fut.done():
                continue
            if results is None:
                fut.set_exception(exc or asyncio.CancelledError())
            else:
                fut.set_result(results[i])
        if self._pending:
            # After the callers just resolved have run: starting the worker now would make it
            # fight them for the GIL (the loop would wait up to the switch interval, 5 ms).
            loop.call_soon(self._kick, loop)
        else:
            self._running = False

    def cancel_pending(self) -> None:
        for _, fut in self._pending:
            if not fut.done():
                fut.cancel()
        self._pending.clear()


class BatchingEmbedder:
    def __init__(self, embedder: Embedder, max_batch: int = 64, memo_size: int = 4096) -> None:
        self.embedder = embedder
        self.pool = worker_pool()
        self._batcher: MicroBatcher[str, Vectors] = MicroBatcher(self._encode, self.pool, max_batch)
        self._memo: OrderedDict[str, Vectors] = OrderedDict()
        self._memo_size = memo_size

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def batches(self) -> int:
        return self._batcher.batches

    @property
    def max_batch(self) -> int:
        return self._batcher.max_batch

    def _encode(self, texts: list[str]) -> list[Vectors]:
        out = self.embedder.encode(texts)
        return [np.ascontiguousarray(row) for row in out]

    async def embed(self, text: str) -> Vectors:
        """One normalised vector of shape (dim,)."""
        hit = self._memo.get(text)
        if hit is not None:
            self._memo.move_to_end(text)
            return hit
        vec = await self._batcher.submit(text)
        self._memo[text] = vec
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return vec

    async def aclose(self) -> None:
        self._batcher.cancel_pending()
        self.pool.shutdown(wait=False, cancel_futures=True)
