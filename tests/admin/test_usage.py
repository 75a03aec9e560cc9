from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from admin.models import UsageEvent
from admin.store import Store
from admin.usage import UsageRecorder


def spill_files(path: Path) -> list[Path]:
    return list(path.glob("*.jsonl"))


def ev(i: int) -> UsageEvent:
    return UsageEvent(f"e{i}", time.time(), f"r{i}", "acme", "k", "m", None, 1, 2, 3, 200, 4)


class FlakySink:
    def __init__(self) -> None:
        self.down = False
        self.batches: list[list[str]] = []

    async def __call__(self, events: Sequence[UsageEvent]) -> None:
        if self.down:
            raise ConnectionError("store down")
        self.batches.append([e.id for e in events])


async def test_batches_and_flush_on_stop(tmp_path: Path) -> None:
    sink = FlakySink()
    rec = UsageRecorder(sink, tmp_path, batch=10, interval=0.05)
    await rec.start()
    for i in range(25):
        rec.record(ev(i))
    await asyncio.sleep(0.2)
    assert [len(b) for b in sink.batches] == [10, 10, 5]
    for i in range(25, 32):
        rec.record(ev(i))
    await rec.stop()  # graceful: nothing left behind
    assert sum(len(b) for b in sink.batches) == 32 and rec.pending() == 0
    assert not spill_files(tmp_path)


async def test_store_down_spills_then_replays_after_restart(tmp_path: Path, store: Store) -> None:
    sink = FlakySink()
    sink.down = True
    rec = UsageRecorder(sink, tmp_path, batch=5, interval=0.01, retries=2, backoff=0.01)
    await rec.start()
    for i in range(12):
        rec.record(ev(i))
    await rec.stop()
    rec.record(ev(12))  # after stop: straight to the spill file
    assert rec.spilled == 13 and sink.batches == []
    # "restart": a new recorder on a working store replays the spill once
    rec2 = UsageRecorder(store.insert_usage, tmp_path)
    await rec2.start()
    await rec2.stop()
    rows = await store.usage(filters={}, day_from=None, day_to=None, group_by=[])
    assert rows[0]["requests"] == 13
    assert not spill_files(tmp_path)
    rec3 = UsageRecorder(store.insert_usage, tmp_path)
    assert await rec3.replay() == 0


async def test_full_queue_spills_instead_of_dropping(tmp_path: Path) -> None:
    """A full queue goes to the spill file in one write by the flush task, never a file write
    inside record() (which runs on the request path)."""
    sink = FlakySink()
    rec = UsageRecorder(sink, tmp_path, batch=100, interval=10, capacity=3)
    await rec.start()
    for i in range(5):
        rec.record(ev(i))
    assert rec.pending() == 2 and rec.spilled == 0  # e0-e2 handed over, e3-e4 queued
    for _ in range(100):
        await asyncio.sleep(0.01)
        if rec.spilled:
            break
    assert rec.spilled == 3
    await rec.stop()
    replayed = FlakySink()
    assert await UsageRecorder(replayed, tmp_path).replay() == 3
    assert sorted(sink.batches[0] + replayed.batches[0]) == [f"e{i}" for i in range(5)]


async def test_spill_lines_of_an_older_release_replay_and_a_torn_one_is_skipped(tmp_path: Path) -> None:
    sink = FlakySink()
    (tmp_path / "usage-1-x.jsonl").write_bytes(
        b'{"id":"a","ts":1.0,"request_id":"r","tenant_id":"t","key_id":null,"model":"m","deployment":null,'
        b'"prompt_tokens":1,"completion_tokens":1,"cost_nusd":1,"status":200,"latency_ms":1,'
        b'"cached":false,"stream":false}\n{"id":"b","ts')
    assert await UsageRecorder(sink, tmp_path).replay() == 1


async def test_a_spilled_batch_is_replayed_as_the_same_batch(tmp_path: Path) -> None:
    """The store applies a batch once by id (digest of its event ids), so a replay must hand it
    the same batches that failed, not a regrouping; a torn last line loses only its batch."""
    sink = FlakySink()
    sink.down = True
    rec = UsageRecorder(sink, tmp_path, batch=5, interval=0.01, retries=0)
    await rec.start()
    for i in range(12):
        rec.record(ev(i))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if rec.spilled == 12:
            break
    await rec.stop()
    spill = spill_files(tmp_path)[0]
    with spill.open("ab") as f:
        f.write(b'{"batch": [{"id": "torn"')
    replayed = FlakySink()
    assert await UsageRecorder(replayed, tmp_path).replay() == 12
    assert replayed.batches == [[f"e{i}" for i in range(k, min(k + 5, 12))] for k in (0, 5, 10)]


async def test_stop_writes_the_events_the_flush_loop_waits_on(tmp_path: Path) -> None:
    sink = FlakySink()
    rec = UsageRecorder(sink, tmp_path, batch=100, interval=30)
    await rec.start()
    rec.record(ev(1))
    await asyncio.sleep(0.01)  # the loop waits for a full batch or the interval
    assert rec.pending() == 1 and sink.batches == []
    await rec.stop()
    assert sink.batches == [["e1"]]
