from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from admin.store import Store
from admin.usage import UsageRecorder, read_spill
from admin.usage_rollup import UsageBatch, day_of

T0 = 1_750_000_000.0  # mid-day UTC


def spill_files(path: Path) -> list[Path]:
    return list(path.glob("*.jsonl"))


def add(rec: UsageRecorder, i: int = 0, *, ts: float | None = None, tenant: str = "acme", key: str | None = "k",
        model: str = "m", status: int = 200, cached: bool = False) -> None:
    rec.add(ts or time.time(), tenant, key, model, 1, 2, 3 + i, status, cached)


class FlakySink:
    def __init__(self) -> None:
        self.down = False
        self.batches: list[UsageBatch] = []

    async def __call__(self, batch: UsageBatch) -> None:
        if self.down:
            raise ConnectionError("store down")
        self.batches.append(batch)

    def requests(self) -> int:
        return sum(b.requests for b in self.batches)


async def test_requests_fold_into_totals_per_day_tenant_key_and_model(tmp_path: Path) -> None:
    sink = FlakySink()
    rec = UsageRecorder(sink, tmp_path, interval=30)
    await rec.start()
    add(rec, 0, ts=T0)
    add(rec, 1, ts=T0 + 1, status=500)
    add(rec, 2, ts=T0 + 2, cached=True)
    add(rec, 3, ts=T0 + 3, key=None)
    add(rec, 4, ts=T0 + 4, model="m2")
    add(rec, 5, ts=T0 - 86400)  # admitted the day before, settled now: counts on its own day
    add(rec, 6, ts=T0 + 86400)  # the next day
    add(rec, 7, ts=T0 + 5)  # back on T0's day after the next day was seen
    assert rec.pending() == 8
    await rec.stop()
    [batch] = sink.batches
    d0, d1, d2 = day_of(T0 - 86400), day_of(T0), day_of(T0 + 86400)
    assert batch.requests == 8
    assert batch.rows == [  # sorted by group: one lock order for every writer
        (d0, "acme", "k", "m", 1, 0, 0, 1, 2, 8),
        (d1, "acme", "", "m", 1, 0, 0, 1, 2, 6),
        (d1, "acme", "k", "m", 4, 1, 1, 4, 8, 3 + 4 + 5 + 10),
        (d1, "acme", "k", "m2", 1, 0, 0, 1, 2, 7),
        (d2, "acme", "k", "m", 1, 0, 0, 1, 2, 9),
    ]


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


async def test_batches_are_cut_by_size_and_by_interval_and_flushed_on_stop(tmp_path: Path) -> None:
    sink = FlakySink()
    rec = UsageRecorder(sink, tmp_path, batch=10, interval=30)
    await rec.start()
    for i in range(25):
        add(rec, i)
        if i % 10 == 9:
            assert rec.pending() == 0  # a full batch is cut in add() itself, whatever the writer does
    await until(lambda: sink.requests() == 20)
    assert [b.requests for b in sink.batches] == [10, 10] and rec.pending() == 5
    assert len({b.id for b in sink.batches}) == 2
    await rec.stop()  # graceful: nothing left behind
    assert sink.requests() == 25 and rec.pending() == 0 and rec.written == 25
    assert not spill_files(tmp_path)
    by_time = FlakySink()
    rec = UsageRecorder(by_time, tmp_path, batch=10, interval=0.05)
    await rec.start()
    add(rec)
    await until(lambda: by_time.requests() == 1)  # cut by the interval
    await rec.stop()
    assert not spill_files(tmp_path)


async def test_store_down_spills_then_replays_once_after_restart(tmp_path: Path, store: Store) -> None:
    sink = FlakySink()
    sink.down = True
    rec = UsageRecorder(sink, tmp_path, batch=5, interval=0.01, retries=2, backoff=0.01)
    await rec.start()
    for i in range(12):
        add(rec, i)
        await asyncio.sleep(0)
    await rec.stop()
    add(rec, 12)  # after stop: straight to the spill file
    assert rec.spilled == 13 and sink.batches == []
    # "restart": a new recorder on a working store replays the spill once
    rec2 = UsageRecorder(store.insert_usage, tmp_path)
    await rec2.start()
    await rec2.stop()
    rows = await store.usage(filters={}, day_from=None, day_to=None, group_by=[])
    assert rows[0]["requests"] == 13
    assert rows[0]["cost_nusd"] == sum(3 + i for i in range(13))
    assert not spill_files(tmp_path)
    rec3 = UsageRecorder(store.insert_usage, tmp_path)
    assert await rec3.replay() == 0


async def test_a_batch_is_spilled_without_more_retries_once_the_queue_bound_waits_behind_it(tmp_path: Path) -> None:
    sink = FlakySink()
    sink.down = True
    rec = UsageRecorder(sink, tmp_path, batch=3, interval=10, capacity=5, retries=1000, backoff=0.05)
    await rec.start()
    for i in range(3):
        add(rec, i)
    await asyncio.sleep(0.02)  # the flush task took the batch of 3 and is retrying it
    assert rec.pending() == 0 and rec.spilled == 0
    add(rec, 3)
    add(rec, 4)  # 2 waiting + 3 in the failing batch: the bound
    for _ in range(100):
        await asyncio.sleep(0.01)
        if rec.spilled:
            break
    assert rec.spilled == 3  # long before 1000 retries
    sink.down = False
    await rec.stop()
    assert sink.requests() == 2
    replayed = FlakySink()
    assert await UsageRecorder(replayed, tmp_path).replay() == 3


async def test_a_spilled_batch_is_replayed_as_the_same_batch_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    """The store applies a batch once by id, so a replay must hand it the same batches that
    failed (same ids, same rows), not a regrouping; a torn last line loses only its batch."""
    sink = FlakySink()
    sink.down = True
    rec = UsageRecorder(sink, tmp_path, batch=5, interval=0.01, retries=0)
    failed: list[UsageBatch] = []
    real_spill = rec._spill

    def spill(batch: UsageBatch) -> None:
        failed.append(batch)
        real_spill(batch)

    rec._spill = spill  # type: ignore[method-assign]
    await rec.start()
    for i in range(12):
        add(rec, i, ts=T0)
        await asyncio.sleep(0)
    await rec.stop()
    spill_file = spill_files(tmp_path)[0]
    with spill_file.open("ab") as f:
        f.write(b'{"id": "torn", "rows": [["2025')
    replayed = FlakySink()
    assert await UsageRecorder(replayed, tmp_path).replay() == 12
    assert replayed.batches == failed and sum(b.requests for b in failed) == 12


async def test_spill_lines_of_an_older_release_replay_under_their_old_batch_id(tmp_path: Path) -> None:
    events = [{"id": i, "ts": T0, "request_id": "r", "tenant_id": "t", "key_id": None, "model": "m",
               "deployment": None, "prompt_tokens": 1, "completion_tokens": 1, "cost_nusd": 1, "status": 200,
               "latency_ms": 1, "cached": False, "stream": False} for i in ("a", "b")]
    (tmp_path / "usage-1-x.jsonl").write_bytes(
        orjson.dumps({"batch": events}) + b"\n" + orjson.dumps(events[0]) + b'\n{"id":"c","ts')
    [batch, single] = read_spill(tmp_path / "usage-1-x.jsonl")
    assert batch.requests == 2 and batch.rows == [(day_of(T0), "t", "", "m", 2, 0, 0, 2, 2, 2)]
    assert single.requests == 1 and single.id != batch.id
    sink = FlakySink()
    assert await UsageRecorder(sink, tmp_path).replay() == 3
    assert sink.batches == [batch, single]


async def test_stop_writes_what_the_flush_loop_waits_on(tmp_path: Path) -> None:
    sink = FlakySink()
    rec = UsageRecorder(sink, tmp_path, batch=100, interval=30)
    await rec.start()
    add(rec, 1)
    await asyncio.sleep(0.01)  # the loop waits for a full batch or the interval
    assert rec.pending() == 1 and sink.batches == []
    await rec.stop()
    assert sink.requests() == 1


async def test_a_write_that_hangs_times_out_and_is_spilled(tmp_path: Path) -> None:
    async def hang(batch: UsageBatch) -> None:
        await asyncio.sleep(3600)

    rec = UsageRecorder(hang, tmp_path, batch=2, interval=30, retries=1, backoff=0.01, timeout=0.05)
    await rec.start()
    add(rec, 0)
    add(rec, 1)
    await until(lambda: rec.spilled == 2)
    await rec.stop()
    assert [p.name.startswith("totals-") for p in spill_files(tmp_path)] == [True]  # not read as old events
    replayed = FlakySink()
    assert await UsageRecorder(replayed, tmp_path).replay() == 2


async def test_a_batch_neither_written_nor_spilled_is_kept_and_tried_again(tmp_path: Path) -> None:
    blocked = tmp_path / "spill"
    blocked.write_text("a file where the spill directory should be")  # spilling fails: not a directory
    sink = FlakySink()
    sink.down = True
    rec = UsageRecorder(sink, blocked, batch=2, interval=0.05, retries=0)
    await rec.start()
    add(rec, 0)
    add(rec, 1)
    await asyncio.sleep(0.2)  # a few cycles: the write and the spill both failed, more than once
    assert rec.spilled == 0 and rec.written == 0
    sink.down = False  # the store is back: the kept batch goes through
    await until(lambda: rec.written == 2)
    await rec.stop()
    assert sink.requests() == 2


async def test_a_keyless_request_and_an_empty_key_are_one_row(tmp_path: Path) -> None:
    sink = FlakySink()
    rec = UsageRecorder(sink, tmp_path, interval=30)
    await rec.start()
    add(rec, 0, ts=T0, key=None)
    add(rec, 1, ts=T0, key="")
    await rec.stop()
    assert sink.batches[0].rows == [(day_of(T0), "acme", "", "m", 2, 0, 0, 2, 4, 7)]


async def test_files_a_crashed_replay_had_claimed_are_replayed_by_the_next_start(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(gone.stdout)
    line = orjson.dumps(UsageBatch("b1", [(day_of(T0), "t", "", "m", 2, 0, 0, 2, 2, 2)], 2)._asdict()) + b"\n"
    (tmp_path / f"replaying-{dead_pid}-aaaa-0.jsonl").write_bytes(line)  # its replayer died
    earlier_run = tmp_path / f"replaying-{os.getpid()}-bbbb-0.jsonl"  # this pid, another recorder: a restart
    earlier_run.write_bytes(line.replace(b"b1", b"b2"))
    alive = tmp_path / f"replaying-{os.getppid()}-cccc-0.jsonl"  # a live process is still on it
    alive.write_bytes(line.replace(b"b1", b"b3"))
    sink = FlakySink()
    assert await UsageRecorder(sink, tmp_path).replay() == 4
    assert sorted(b.id for b in sink.batches) == ["b1", "b2"]
    assert [p.name for p in spill_files(tmp_path)] == [alive.name]
