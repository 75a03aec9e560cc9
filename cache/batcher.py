"""Embedding off the event loop, micro-batched across concurrent requests.

``embed(text)`` never runs model code on the loop: texts that arrive while a batch is being
encoded in the single worker thread are queued and encoded together as the next batch (up to
``max_batch``), so N concurrent lookups cost about one batch, not N calls. A bounded LRU memo
skips re-embedding a text seen recently. ``aclose`` fails pending callers and stops the thread.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cache.embedders import Embedder, Vectors


class BatchingEmbedder:
    def __init__(self, embedder: Embedder, max_batch: int = 64, memo_size: int = 4096) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnout-embed")
        self._pending: list[tuple[str, asyncio.Future[Vectors]]] = []
        self._running = False
        self._memo: OrderedDict[str, Vectors] = OrderedDict()
        self._memo_size = memo_size
        self.batches = 0  # number of encode calls, for tests and benchmarks

    @property
    def dim(self) -> int:
        return self.embedder.dim

    async def embed(self, text: str) -> Vectors:
        """One normalised vector of shape (dim,)."""
        hit = self._memo.get(text)
        if hit is not None:
            self._memo.move_to_end(text)
            return hit
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Vectors] = loop.create_future()
        self._pending.append((text, fut))
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
        work = loop.run_in_executor(self._pool, self.embedder.encode, [t for t, _ in batch])
        work.add_done_callback(lambda done: self._finish(loop, batch, done))

    def _finish(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[str, asyncio.Future[Vectors]]],
                done: asyncio.Future[Vectors]) -> None:
        self.batches += 1
        exc = None if done.cancelled() else done.exception()
        for i, (text, fut) in enumerate(batch):
            if fut.done():
                continue
            if done.cancelled() or exc is not None:
                fut.set_exception(exc or asyncio.CancelledError())
                continue
            vec = np.ascontiguousarray(done.result()[i])
            self._remember(text, vec)
            fut.set_result(vec)
        if self._pending:
            self._kick(loop)
        else:
            self._running = False

    def _remember(self, text: str, vec: Vectors) -> None:
        self._memo[text] = vec
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)

    async def aclose(self) -> None:
        for _, fut in self._pending:
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
