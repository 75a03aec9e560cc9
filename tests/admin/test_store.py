from __future__ import annotations

import asyncio
import time

import pytest

from admin import keygen
from admin.db import Database, connect
from admin.errors import Conflict, InvalidRequest, NotFound
from admin.migrations import MIGRATIONS, migrate
from admin.models import Limits, UsageEvent
from admin.store import Store
from admin.usage_rollup import UsageBatch, day_of
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
    await store.insert_usage(UsageBatch.of_events(events))
    await store.insert_usage(UsageBatch.of_events(events))  # the same batch again (a replay): nothing counted twice
    rows = await store.usage(filters={"tenant": "acme"}, day_from=None, day_to=None, group_by=["key"])
    assert [(r["key_id"], r["requests"], r["cost_nusd"]) for r in rows] == [("k1", 2, 12), ("k2", 1, 11)]
    rows = await store.usage(filters={"model": "m"}, day_from=day_of(time.time()), day_to=None,
                             group_by=["day"])
    assert [(r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(1, 3, 4)]
    assert await store.spent_since("tenant", "acme", time.time() - 60) == 18  # from today's midnight
    assert await store.spent_since("key", "k1", 0) == 12


async def test_usage_totals_add_up_across_batches_and_count_failures(store: Store) -> None:
    # 300 models: more rows than one statement
    await store.insert_usage(UsageBatch.of_events([event(i, cost=1, model=f"m{i}") for i in range(300)]))
    failed = [event(1000 + i, cost=0)._replace(status=502 if i % 2 else 499, cached=i == 0) for i in range(4)]
    await store.insert_usage(UsageBatch.of_events([*failed, event(2000, key=None)]))
    rows = await store.usage(filters={}, day_from=None, day_to=None, group_by=["key"])
    by_key = {r["key_id"]: r for r in rows}
    assert (by_key["k1"]["requests"], by_key["k1"]["failed"], by_key["k1"]["cached"]) == (304, 4, 1)
    assert by_key["k1"]["cost_nusd"] == 300 and by_key[None]["requests"] == 1


def test_rollup_groups_by_day_tenant_key_model() -> None:
    from admin.usage_rollup import batch_id, rollup

    midnight = 1_750_032_000.0  # 2025-06-16 00:00:00 UTC
    events = [event(2, ts=midnight + 5, model="x"), event(0, ts=midnight - 0.25), event(1, ts=midnight),
              event(3, ts=midnight + 86399.75)]  # groups first seen out of order
    assert rollup(events) == [  # sorted by group: one lock order for every writer
        ("2025-06-15", "acme", "k1", "m", 1, 0, 0, 3, 4, 10),
        ("2025-06-16", "acme", "k1", "m", 2, 0, 0, 6, 8, 20),
        ("2025-06-16", "acme", "k1", "x", 1, 0, 0, 3, 4, 10),
    ]
    assert batch_id(events) == batch_id(list(events)) != batch_id(events[::-1])


def test_statement_chunks_cover_every_row_with_few_sizes() -> None:
    from admin.usage_rollup import MAX_CHUNK, chunks

    sizes: set[int] = set()
    for n in range(0, 3 * MAX_CHUNK + 3):
        got = chunks(n)
        assert sum(got) == n and all(0 < c <= MAX_CHUNK and c & (c - 1) == 0 for c in got)
        sizes.update(got)
    assert len(sizes) == MAX_CHUNK.bit_length()  # 1, 2, 4, ... MAX_CHUNK: each parsed once


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_version_1_usage_rows_are_folded_into_daily_totals(engine: str, tmp_path: object,
                                                                  pg_schema: str) -> None:
    db = await (connect(f"sqlite:///{tmp_path}/v1.db") if engine == "sqlite"
                else connect(PG_URL, schema=pg_schema, pool_size=2))
    try:
        await _fold_version_1(db)
    finally:
        await db.close()
        if engine == "postgres":
            await drop_schema(pg_schema)


async def _fold_version_1(db: Database) -> None:
    from admin.migrations import MIGRATIONS as ALL

    async with db.transaction() as tx:  # a database left at version 1 with per-event rows
        await tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        for sql in ALL[0][1]:
            await tx.execute(sql)
        await tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)")
        for i, status in enumerate((200, 200, 500)):
            await tx.execute(
                "INSERT INTO usage_events VALUES "
                "($1, $2, '2025-06-16', $3, 'acme', NULL, 'm', 'd', 3, 4, $4, $5, 1, 0, 0)",
                f"e{i}", 1_750_032_000.0, f"r{i}", 10 * (status == 200), status)
    assert await migrate(db) == MIGRATIONS[-1][0]
    rows = await Store(db).usage(filters={}, day_from=None, day_to=None, group_by=["day", "key"])
    assert [(r["day"], r["key_id"], r["requests"], r["failed"], r["cost_nusd"]) for r in rows] == [
        ("2025-06-16", None, 3, 1, 20)]


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
