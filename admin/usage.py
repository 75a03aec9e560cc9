"""Usage events: a bounded queue drained in batches, off the request path.

Contracts:
- ``record`` never blocks and never drops: when the queue is full, the whole queue is handed
  to the flush task, which appends it to the spill file in one write, in a thread.
- A background task writes batches of up to ``batch`` events at least every ``interval``
  seconds. A failed write is retried with exponential backoff (``retries`` times), then the
  batch is spilled to ``<spill_dir>/usage-<pid>-<n>.jsonl``.
- ``start`` first replays spill files left by earlier runs (any process: a file is claimed by
  an atomic rename, so replicas sharing the directory replay it once). A spill file holds one
  line per batch and each is replayed as that batch; the store applies a batch once (by id),
  so a replay after a partial replay, or of a batch whose commit was not acknowledged, counts
  nothing twice.
- ``stop`` (graceful shutdown) writes everything queued; what the store refuses is spilled.
  Events recorded after ``stop`` go straight to the spill file.
- Loss bound on ``kill -9``: only events still in memory, i.e. recorded during the last
  ``interval`` seconds plus the batch being written, and a full queue not yet spilled (never
  more than twice ``capacity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson

from admin.models import UsageEvent

log = logging.getLogger("turnout.admin.usage")
Sink = Callable[[Sequence[UsageEvent]], Awaitable[None]]


class UsageRecorder:
    def __init__(
        self, sink: Sink, spill_dir: str | Path, *, batch: int = 500, interval: float = 1.0,
        capacity: int = 50_000, retries: int = 3, backoff: float = 0.2,
    ) -> None:
        self._sink = sink
        self._dir = Path(spill_dir)
        self._batch = batch
        self._threshold = min(batch, capacity)  # queue length at which record() looks further; 1 after stop()
        self._interval = interval
        self._retries = retries
        self._backoff = backoff
        self._capacity = capacity
        # A plain list, not asyncio.Queue: record() runs once per request and must stay a few
        # hundred nanoseconds; only the flush task waits, on _full or the interval.
        self._queue: list[UsageEvent] = []
        self._overflow: list[list[UsageEvent]] = []  # full queues waiting to be spilled
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._full = asyncio.Event()
        self._stopped = False
        self._seq = itertools.count()
        self._spill_path = self._dir / f"usage-{os.getpid()}-{id(self):x}.jsonl"
        self.written = 0
        self.spilled = 0

    def record(self, event: UsageEvent) -> None:
        queue = self._queue
        queue.append(event)
        if len(queue) >= self._threshold:  # one test per event on the usual path
            self._on_batch()

    def _on_batch(self) -> None:
        queue = self._queue
        if self._stopped:  # after stop(): each new event straight to the spill file
            self._spill([queue.pop()])
            return
        if len(queue) >= self._capacity:
            # The store cannot keep up: hand the whole queue to the flush task, which spills it
            # in one write off the event loop (never a file write per request here).
            self._overflow.append(queue)
            self._queue = []
        self._full.set()

    async def start(self) -> None:
        try:
            await self.replay()
        except Exception as exc:  # store down at boot: the files stay for the next start
            log.warning("usage spill replay failed: %s", exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def stop(self) -> None:
        self._stopped = True
        self._threshold = 1  # from now on every event goes to the spill file at once
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight is not None:
            await self._inflight
        await self._spill_overflow()
        while self._queue:
            await self._write(self._take(self._batch))

    def pending(self) -> int:
        return len(self._queue)

    def _take(self, limit: int) -> list[UsageEvent]:
        if len(self._queue) <= limit:
            batch, self._queue = self._queue, []
        else:
            batch, self._queue = self._queue[:limit], self._queue[limit:]
        return batch

    async def _spill_overflow(self) -> None:
        while self._overflow:
            await asyncio.to_thread(self._spill, self._overflow[0])
            self._overflow.pop(0)  # dropped only once on disk: stop() spills what is left

    async def _run(self) -> None:
        while True:
            await self._spill_overflow()
            if len(self._queue) < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._interval)
            self._full.clear()
            if not self._queue:
                continue
            # Taken out of the queue only once the write starts; stop() awaits _inflight, so a
            # batch is never in neither place.
            self._inflight = asyncio.ensure_future(self._write(self._take(self._batch)))
            await asyncio.shield(self._inflight)
            self._inflight = None

    async def _write(self, batch: list[UsageEvent]) -> None:
        if not batch:
            return
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                await self._sink(batch)
                self.written += len(batch)
                return
            except Exception as exc:  # the store is down: retry, then spill
                log.warning("usage write failed (attempt %d): %s", attempt + 1, exc)
                if attempt < self._retries:
                    await asyncio.sleep(delay)
                    delay *= 2
        await asyncio.to_thread(self._spill, batch)

    def _spill(self, events: Sequence[UsageEvent]) -> None:
        """Append events to this process's spill file, with fsync (the flush task calls it in
        a thread; only events recorded after stop() are spilled on the caller's thread)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        with self._spill_path.open("ab") as f:
            # One line per batch: replayed as the same batch (same id), so a batch whose
            # commit went through unacknowledged is not counted twice.
            f.write(orjson.dumps({"batch": [e.to_json() for e in events]}) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.spilled += len(events)

    async def replay(self) -> int:
        """Write every spill file of earlier runs to the sink; returns the events replayed."""
        if not self._dir.is_dir():
            return 0
        total = 0
        for path in sorted(self._dir.glob("usage-*.jsonl")):
            if path == self._spill_path:
                continue
            claimed = self._dir / f"replaying-{os.getpid()}-{next(self._seq)}.jsonl"
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue  # another replica claimed it
            total += await self._replay_file(claimed)
        return total

    async def _replay_file(self, path: Path) -> int:
        batches = await asyncio.to_thread(_read_spill, path)
        try:
            for batch in batches:
                await self._sink(batch)
        except Exception:
            back = self._dir / f"usage-{os.getpid()}-r{next(self._seq)}.jsonl"
            await asyncio.to_thread(path.rename, back)
            raise
        await asyncio.to_thread(path.unlink)
        count = sum(len(b) for b in batches)
        log.info("replayed %d usage events from %s", count, path.name)
        return count


def _read_spill(path: Path) -> list[list[UsageEvent]]:
    """The batches of a spill file, in order; a torn line (a crash mid-write) is skipped."""
    batches = []
    for line in path.read_bytes().splitlines():
        try:
            raw = orjson.loads(line)
            # {"batch": [...]}; a bare event is a line of an older release: a batch of one
            batches.append([UsageEvent.from_json(e) for e in raw["batch"]] if "batch" in raw
                           else [UsageEvent.from_json(raw)])
        except (orjson.JSONDecodeError, TypeError, KeyError):
            log.warning("skipping a torn line in %s", path)
    return batches
