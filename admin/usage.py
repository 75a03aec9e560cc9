"""Usage metering off the request path: each finished request is grouped at once under its
daily total in memory, and a background task writes the totals to the store in batches.

Contracts:
- ``add`` runs once per request (``AdmissionTicket`` settle/release): it files the request's
  numbers under its group (UTC day of admission, tenant, key, model): a dict lookup and an
  append, never I/O, never a drop. ``stop`` rebinds it to spill at once.
- The open groups are **cut** into a batch of totals (one row per group, sums in C) as soon as
  ``batch`` requests were added (right in ``add``, so memory holds at most ``batch`` requests'
  numbers whatever the writer is doing) and every ``interval`` seconds by the flush task. A
  batch gets a unique id at the cut (a random per-recorder prefix and a counter) and keeps it
  through retries, spill and replay: the store applies a batch once by id, so a retried write,
  a replayed spill, or a write whose commit went through unacknowledged counts nothing twice.
- The flush task writes cut batches in order. A write that fails or takes longer than
  ``timeout`` is retried with exponential backoff (``retries`` times), then the batch is
  appended to ``<spill_dir>/totals-<pid>-<prefix>.jsonl`` with fsync, in a thread; it goes to
  the spill file without further retries once ``capacity`` requests wait in memory behind it.
  If even the spill fails (disk full), the batch is kept and tried again a cycle later.
- ``start`` first replays spill files left by earlier runs (any process: a file is claimed by
  an atomic rename, so replicas sharing the directory replay it once; a file whose claimant
  died before finishing it is claimed again), one batch per line;
  ``usage-*.jsonl`` files of older releases (events) are replayed too.
- ``stop`` (graceful shutdown) cuts and writes everything; what the store refuses is spilled.
- Loss bound on ``kill -9``: what is in memory: the requests added since the last cut (at
  most ``interval`` seconds or ``batch`` requests) plus the cut batches not written yet (the
  one being written, and what was cut during its attempts: at most ``capacity`` requests once
  an attempt has failed, each attempt bounded by ``timeout``).

Why totals and not a queue of events: the store keeps only daily totals (``usage_rollup``),
so an event per request was built, queued and folded later anyway. Filing the numbers at once
costs the request path less than building the event did, and a batch is a row per group.
New spill files are named ``totals-*`` so that an older release (which reads ``usage-*`` as
events) never mistakes one for a torn file and deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from admin.models import UsageEvent
from admin.usage_rollup import COLUMNS, Group, Member, Total, UsageBatch, day_of_index, totals

log = logging.getLogger("turnout.admin.usage")
_DAY_S = 86400
_SPILL_GLOBS = ("totals-*.jsonl", "usage-*.jsonl")  # this release's, then older releases'


Sink = Callable[[UsageBatch], Awaitable[None]]
Add = Callable[[float, str, str | None, str, int, int, int, int, bool], None]


class UsageRecorder:
    def __init__(
        self, sink: Sink, spill_dir: str | Path, *, batch: int = 5_000, interval: float = 1.0,
        capacity: int = 50_000, retries: int = 3, backoff: float = 0.2, timeout: float = 10.0,
    ) -> None:
        self._sink = sink
        self._dir = Path(spill_dir)
        self._batch = batch
        self._interval = interval
        self._retries = retries
        self._backoff = backoff
        self._timeout = timeout
        self._capacity = capacity
        # (UTC day number, tenant, key, model) -> its requests since the last cut
        self._open: dict[tuple[float, str, str | None, str], list[Member]] = {}
        self._added = 0  # requests added to _open since the last cut
        self._ready: list[UsageBatch] = []  # cut, not written yet, in order
        self._prefix = secrets.token_hex(6)
        self._ids = itertools.count()
        self._cut_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._seq = itertools.count()
        self._spill_path = self._dir / f"totals-{os.getpid()}-{self._prefix}.jsonl"
        self.add: Add = self._fold
        self.written = 0  # requests
        self.spilled = 0  # requests

    def _fold(self, ts: float, tenant: str, key_id: str | None, model: str, prompt: int, completion: int,
              cost_nusd: int, status: int, cached: bool) -> None:
        """``add`` until ``stop``: ``ts`` is the request's admission time (its day is the one
        its budget period counted it in). Only grouped here; the sums run in C at the cut."""
        group = (ts // _DAY_S, tenant, key_id, model)
        members = self._open.get(group)
        if members is None:
            members = self._open[group] = []
        members.append((prompt, completion, cost_nusd, status, cached))
        self._added += 1
        if self._added >= self._batch:
            self._cut()

    def _spill_at_once(self, ts: float, tenant: str, key_id: str | None, model: str, prompt: int,
                       completion: int, cost_nusd: int, status: int, cached: bool) -> None:
        """``add`` after ``stop``: nothing will flush any more, so each request is spilled."""
        self._fold(ts, tenant, key_id, model, prompt, completion, cost_nusd, status, cached)
        self._cut()
        while self._ready:
            self._spill(self._ready.pop(0))

    def pending(self) -> int:
        """Requests added but not cut into a batch yet."""
        return self._added

    def _cut(self) -> None:
        """The open groups become a batch ready to write (a None key and '' are one group)."""
        if not self._open:
            return
        opened, requests = self._open, self._added
        self._open, self._added = {}, 0
        groups: dict[Group, list[Member]] = {}
        for (day, tenant, key_id, model), members in opened.items():
            groups.setdefault((day_of_index(int(day)), tenant, key_id or "", model), []).extend(members)
        self._ready.append(UsageBatch(f"{self._prefix}-{next(self._ids):x}", totals(groups), requests))
        self._cut_ready.set()

    def _waiting(self) -> int:
        """Requests in memory not written yet: cut batches and the open groups."""
        return self._added + sum(b.requests for b in self._ready)

    async def start(self) -> None:
        try:
            await self.replay()
        except Exception as exc:  # store down at boot: the files stay for the next start
            log.warning("usage spill replay failed: %s", exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def stop(self) -> None:
        """Cut and write everything added so far. The flush task is woken, never cancelled (not
        even if ``stop`` itself is), so a write is not interrupted half-way."""
        self._stopping = True
        self._cut_ready.set()
        if self._task is not None:
            [outcome] = await asyncio.gather(asyncio.shield(self._task), return_exceptions=True)
            if isinstance(outcome, BaseException):  # a bug, not the store: what it held is written below
                log.error("the usage flush task failed: %r", outcome)
        self.add = self._spill_at_once
        self._cut()  # added while the task finished
        await self._write_ready(final=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_cut = loop.time() + self._interval
        while not self._stopping:
            if not self._ready:  # wait for a cut by size, or the interval's own cut
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cut_ready.wait(), max(next_cut - loop.time(), 0.0))
            self._cut_ready.clear()
            if loop.time() >= next_cut:
                self._cut()
                next_cut = loop.time() + self._interval
            if not await self._write_ready(final=False):
                await asyncio.sleep(self._interval)  # not even spilled (disk full?): try again later

    async def _write_ready(self, *, final: bool) -> bool:
        """Write (or spill) the cut batches in order; False if one could be neither (it stays
        first in line; on the final call it is logged as lost)."""
        while self._ready:
            if not await self._write(self._ready[0]):
                if not final:
                    return False
                log.error("usage of %d requests lost: neither written nor spilled", self._ready[0].requests)
            self._ready.pop(0)
        return True

    async def _write(self, batch: UsageBatch) -> bool:
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                await asyncio.wait_for(self._sink(batch), self._timeout)
                self.written += batch.requests
                return True
            except Exception as exc:  # the store is down or stuck: retry, then spill
                log.warning("usage write failed (attempt %d): %r", attempt + 1, exc)
                if attempt == self._retries or self._waiting() >= self._capacity:
                    break
                await asyncio.sleep(delay)
                delay *= 2
        try:
            await asyncio.to_thread(self._spill, batch)
        except OSError as exc:
            log.error("spilling usage failed: %s", exc)
            return False
        return True

    def _spill(self, batch: UsageBatch) -> None:
        """Append a batch to this recorder's spill file, with fsync (in a thread, but for the
        requests added after ``stop``)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        with self._spill_path.open("ab") as f:
            f.write(orjson.dumps(batch._asdict()) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.spilled += batch.requests

    async def replay(self) -> int:
        """Write every spill file of earlier runs to the sink; returns the requests replayed."""
        if not self._dir.is_dir():
            return 0
        total = 0
        spilled = [p for pattern in _SPILL_GLOBS for p in sorted(self._dir.glob(pattern))]
        for path in [*self._stranded(), *spilled]:
            if path == self._spill_path:
                continue
            claimed = self._dir / f"replaying-{os.getpid()}-{self._prefix}-{next(self._seq)}.jsonl"
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue  # another replica claimed it
            total += await self._replay_file(claimed)
        return total

    def _stranded(self) -> list[Path]:
        """Files a process claimed for replay and died before finishing them (its pid is gone,
        or is this process's while the file is not this recorder's: a restart that got the
        same pid, as in a container). A crash during the replay at startup must not strand
        them; a batch is applied once by id, so replaying one again counts nothing twice."""
        stranded = []
        for path in sorted(self._dir.glob("replaying-*.jsonl")):
            parts = path.name.split("-")
            if len(parts) < 4 or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if (pid != os.getpid() and not _alive(pid)) or (pid == os.getpid() and parts[2] != self._prefix):
                stranded.append(path)
        return stranded

    async def _replay_file(self, path: Path) -> int:
        batches = await asyncio.to_thread(read_spill, path)
        try:
            for batch in batches:
                await self._sink(batch)
        except Exception:
            back = self._dir / f"totals-{os.getpid()}-r{next(self._seq)}.jsonl"
            await asyncio.to_thread(path.rename, back)
            raise
        await asyncio.to_thread(path.unlink)
        count = sum(b.requests for b in batches)
        log.info("replayed the usage of %d requests from %s", count, path.name)
        return count


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def read_spill(path: Path) -> list[UsageBatch]:
    """The batches of a spill file, in order; a torn line (a crash mid-write) is skipped.
    Lines of older releases hold events (``{"batch": [...]}``, or one bare event): they are
    folded here, with the id those releases gave the batch."""
    batches = []
    for line in path.read_bytes().splitlines():
        try:
            raw = orjson.loads(line)
            if "rows" in raw:
                rows = [_row(r) for r in raw["rows"]]
                batches.append(UsageBatch(str(raw["id"]), rows, int(raw["requests"])))
            else:
                events = [UsageEvent.from_json(e) for e in raw["batch"]] if "batch" in raw else [
                    UsageEvent.from_json(raw)]
                batches.append(UsageBatch.of_events(events))
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            log.warning("skipping a torn line in %s", path)
    return batches


def _row(raw: list[Any]) -> Total:
    """A spilled row, checked (a mangled line is skipped, not half-applied)."""
    if len(raw) != len(COLUMNS):
        raise ValueError(f"a usage row has {len(raw)} fields")
    day, tenant, key_id, model, requests, failed, cached, prompt, completion, cost = raw
    return (str(day), str(tenant), str(key_id), str(model), int(requests), int(failed), int(cached), int(prompt),
            int(completion), int(cost))
