"""Fixtures for admin tests: real Redis and PostgreSQL (unique key prefix / schema per test)
and SQLite files in tmp_path."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from admin.db import Database, connect
from admin.migrations import migrate
from admin.store import Store

REDIS_URL = os.environ.get("TURNOUT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("TURNOUT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_prefix() -> str:
    return unique("tt:admin:") + ":"


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    pool = aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=64)
    client = aioredis.Redis(connection_pool=pool)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await pool.disconnect()


@pytest.fixture
def pg_schema() -> str:
    return unique("tt_admin_")


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: object, pg_schema: str) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = await connect(f"sqlite:///{tmp_path}/admin.db")
    else:
        database = await connect(PG_URL, schema=pg_schema, pool_size=4)
    await migrate(database)
    yield database
    await database.close()
    if request.param == "postgres":
        await drop_schema(pg_schema)


@pytest.fixture
async def store(db: Database) -> Store:
    return Store(db)
