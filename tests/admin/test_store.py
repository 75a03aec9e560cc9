from __future__ import annotations

import asyncio
import time

import pytest

from admin import keygen
from admin.db import Database, connect
from admin.errors import Conflict, InvalidRequest, NotFound
from admin.migrations import MIGRATIONS, migrate
from admin.models import Limits, UsageEvent
from admin.store import Store, day_of
from tests.admin.conftest import PG_URL, drop_schema


def event(i: int, tenant: str = "acme", key: str | None = "k1", model: str = "m", cost: int = 10,
          ts: float | None = None) -> UsageEvent:
    return UsageEvent(f"e{i}", ts or time.time(), f"r{i}", tenant, key, model, "dep", 3, 4, cost, 200, 12)


async def test_tenant_and_key_lifecycle(store: Store) -> None:
    limits = Limits(models=frozenset({"a"}), rpm=10, budget_usd=1.5, budget_period="day")
    await store.create_tenant("acme", "Acme", limits)
    with pytest.raises(Conflict):
        await store.create_tenant("acme", "again", Limits())
    assert (await store.tenant("acme")).limits == limits  # type: ignore[union-attr]
    key, secret = await store.create_key("acme", "ci", Limits(tpm=100))
    assert secret.startswith("tk-") and keygen.key_id_of(secret) == key.id
    stored = await store.key(key.id)
    assert stored is not None and stored.hash == keygen.hash_key(secret) and secret not in stored.hash
    got = await store.key_with_tenant(key.id)
    assert got is not None and got[0].limits.tpm == 100 and got[1].limits.rpm == 10
    with pytest.raises(NotFound):
        await store.create_key("nobody")
    for bad in ("", "a b", "x" * 65, "t/1"):
        with pytest.raises(InvalidRequest):
            await store.create_tenant(bad, "bad", Limits())


async def test_rotate_gives_grace_then_revoke(store: Store) -> None:
    await store.create_tenant("acme", "Acme", Limits())
    old, _ = await store.create_key("acme", "svc", Limits(rpm=5))
    new, secret = await store.rotate_key(old.id, grace_s=60)
    old_now = await store.key(old.id)
    assert old_now is not None and old_now.replaced_by == new.id and old_now.usable()
    assert old_now.expires_at is not None and old_now.expires_at <= time.time() + 60
    assert new.limits.rpm == 5 and keygen.matches(secret, new.hash)
    revoked = await store.revoke_key(new.id)
    assert revoked.revoked_at is not None and not revoked.usable()
    with pytest.raises(Conflict):
        await store.rotate_key(new.id, 0)
    assert [k.id for k in await store.keys("acme")] == [old.id, new.id]


async def test_usage_insert_is_idempotent_and_queryable(store: Store) -> None:
    day1 = time.time() - 86400
    events = [event(1, cost=5, ts=day1), event(2, cost=7), event(3, key="k2", model="x", cost=11)]
    await store.insert_usage(events)
    await store.insert_usage(events)  # a replay: nothing counted twice
    rows = await store.usage(filters={"tenant": "acme"}, day_from=None, day_to=None, group_by=["key"])
    assert [(r["key_id"], r["requests"], r["cost_nusd"]) for r in rows] == [("k1", 2, 12), ("k2", 1, 11)]
    rows = await store.usage(filters={"model": "m"}, day_from=day_of(time.time()), day_to=None,
                             group_by=["day"])
    assert [(r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(1, 3, 4)]
    assert await store.spent_since("tenant", "acme", time.time() - 3600) == 18
    assert await store.spent_since("key", "k1", 0) == 12


async def test_batches_larger_than_one_insert_are_written_whole_and_once(store: Store) -> None:
    from admin.store import ROWS_PER_INSERT

    events = [event(i, cost=1) for i in range(2 * ROWS_PER_INSERT + 7)]
    await store.insert_usage(events)
    await store.insert_usage(events[-10:])  # replayed tail: counted once
    rows = await store.usage(filters={}, day_from=None, day_to=None, group_by=[])
    assert (rows[0]["requests"], rows[0]["cost_nusd"]) == (len(events), len(events))


def test_usage_chunks_cover_every_row_with_few_statement_sizes() -> None:
    from admin.store import ROWS_PER_INSERT, usage_chunks

    sizes: set[int] = set()
    for n in range(0, 3 * ROWS_PER_INSERT + 3):
        chunks = usage_chunks(n)
        assert sum(chunks) == n and all(0 < c <= ROWS_PER_INSERT and c & (c - 1) == 0 for c in chunks)
        sizes.update(chunks)
    assert len(sizes) == ROWS_PER_INSERT.bit_length()  # 1, 2, 4, ... ROWS_PER_INSERT: each parsed once


async def test_the_database_derives_the_same_utc_day_as_day_of(store: Store) -> None:
    midnight = 1_750_032_000.0  # 2025-06-16 00:00:00 UTC
    stamps = (midnight - 0.25, midnight, midnight + 86399.75)
    await store.insert_usage([event(i, ts=ts) for i, ts in enumerate(stamps)])
    rows = await store.usage(filters={}, day_from=None, day_to=None, group_by=["day"])
    assert [(r["day"], r["requests"]) for r in rows] == [("2025-06-15", 1), ("2025-06-16", 2)]
    assert [day_of(ts) for ts in stamps] == ["2025-06-15", "2025-06-16", "2025-06-16"]


async def test_migrations_are_numbered_and_idempotent(db: Database) -> None:
    assert await migrate(db) == MIGRATIONS[-1][0]
    rows = await db.fetch("SELECT version FROM schema_migrations")
    assert [r["version"] for r in rows] == [v for v, _ in MIGRATIONS]


async def test_concurrent_migrations_on_postgres(pg_schema: str) -> None:
    dbs = [await connect(PG_URL, schema=pg_schema, pool_size=2) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(d) for d in dbs))
        rows = await dbs[0].fetch("SELECT COUNT(*) AS n FROM schema_migrations")
        assert rows[0]["n"] == len(MIGRATIONS)
    finally:
        for d in dbs:
            await d.close()
        await drop_schema(pg_schema)
