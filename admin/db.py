"""A thin driver layer so the store has one code path for SQLite and PostgreSQL.

SQL is written once, in PostgreSQL's ``$1`` placeholder style and in the dialect both engines
share (``ON CONFLICT``, ``CAST``, ``COALESCE``, ``BIGINT``, ``DOUBLE PRECISION``); the SQLite
driver rewrites ``$n`` to ``?n``. Rows come back as plain dicts.

Contracts: ``transaction()`` yields a handle whose statements run atomically and serialised
against other writers (PostgreSQL: one pooled connection; SQLite: ``BEGIN IMMEDIATE`` under a
lock). ``exclusive_lock()`` inside a transaction serialises schema migrations across processes.
Nothing here runs on the request path except a key-cache miss.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

Row = dict[str, Any]
Dialect = Literal["sqlite", "postgresql"]
_PLACEHOLDER = re.compile(r"\$(\d+)")
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MIGRATION_LOCK_ID = 0x7475726E  # "turn"


class Handle(Protocol):
    async def execute(self, sql: str, *args: Any) -> None: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def exclusive_lock(self) -> None: ...


class Database(Handle, Protocol):
    dialect: Dialect

    def transaction(self) -> Any:
        """``async with db.transaction() as tx:`` — tx is a Handle."""
        ...

    async def close(self) -> None: ...


async def fetchone(h: Handle, sql: str, *args: Any) -> Row | None:
    rows = await h.fetch(sql, *args)
    return rows[0] if rows else None


class SQLiteDatabase:
    dialect: Dialect = "sqlite"

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _sql(sql: str) -> str:
        """``$n`` → ``?n``, once per distinct statement (a usage batch has 14,000 of them)."""
        return _PLACEHOLDER.sub(r"?\1", sql)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._lock:
            await self._conn.execute(self._sql(sql), args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            cur = await self._conn.execute(self._sql(sql), args)
            rows = await cur.fetchall()
            await cur.close()
        return [dict(r) for r in rows]

    async def exclusive_lock(self) -> None:
        return None  # BEGIN IMMEDIATE already holds the database write lock

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SQLiteTx]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTx(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def close(self) -> None:
        await self._conn.close()


class _SQLiteTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(SQLiteDatabase._sql(sql), args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(SQLiteDatabase._sql(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        cur = await self._conn.execute(SQLiteDatabase._sql(sql), args)
        rows = await cur.fetchall()
        await cur.close()
        return [dict(r) for r in rows]

    async def exclusive_lock(self) -> None:
        return None


class PostgresDatabase:
    dialect: Dialect = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def execute(self, sql: str, *args: Any) -> None:
        await self._pool.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._pool.fetch(sql, *args)]

    async def exclusive_lock(self) -> None:
        raise RuntimeError("exclusive_lock needs a transaction")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PostgresTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PostgresTx(conn)

    async def close(self) -> None:
        await self._pool.close()


class _PostgresTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._conn.fetch(sql, *args)]

    async def exclusive_lock(self) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID)


async def connect(url: str, *, schema: str | None = None, pool_size: int = 10) -> Database:
    """Open a database from a ``sqlite:///path`` or ``postgresql://...`` URL.

    ``schema`` (PostgreSQL only) is created if missing and set as every connection's
    search_path, which is how tests and co-hosted deployments isolate their tables.
    """
    if url.startswith("sqlite://"):
        import aiosqlite

        path = urlsplit(url).path
        path = path[1:] if path.startswith("/") else path
        conn = await aiosqlite.connect(path or ":memory:", isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit is durable across a process crash (kill -9) and never
        # corrupts; only an OS crash or power loss can drop the last commits. FULL would
        # fsync every usage batch on the worker thread.
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=5000")
        return SQLiteDatabase(conn)
    import asyncpg

    settings: dict[str, str] = {}
    if schema is not None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except (asyncpg.UniqueViolationError, asyncpg.DuplicateSchemaError):
            pass  # another replica created it at the same moment
        finally:
            await conn.close()
        settings["search_path"] = schema
    pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, server_settings=settings)
    return PostgresDatabase(pool)
