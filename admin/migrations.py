"""Numbered schema migrations, shared by SQLite and PostgreSQL.

Each migration is applied once, inside one transaction that first takes the cross-process
migration lock, so replicas starting together apply it exactly once. Never edit an applied
migration; append a new number.
"""

from __future__ import annotations

import time

from admin.db import Database

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            limits TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            hash TEXT NOT NULL,
            name TEXT NOT NULL,
            limits TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION,
            replaced_by TEXT)""",
        "CREATE INDEX api_keys_tenant ON api_keys (tenant_id)",
        """CREATE TABLE usage_events (
            id TEXT PRIMARY KEY,
            ts DOUBLE PRECISION NOT NULL,
            day TEXT NOT NULL,
            request_id TEXT NOT NULL,
            tenant_id TEXT NOT NULL,
            key_id TEXT,
            model TEXT NOT NULL,
            deployment TEXT,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            cost_nusd BIGINT NOT NULL,
            status INTEGER NOT NULL,
            latency_ms INTEGER NOT NULL,
            cached INTEGER NOT NULL,
            stream INTEGER NOT NULL)""",
        "CREATE INDEX usage_tenant_day ON usage_events (tenant_id, day)",
        "CREATE INDEX usage_key_day ON usage_events (key_id, day)",
    )),
)


async def migrate(db: Database) -> int:
    """Bring the schema to the latest version in one locked transaction; returns the version."""
    async with db.transaction() as tx:
        await tx.exclusive_lock()
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = {r["version"] for r in await tx.fetch("SELECT version FROM schema_migrations")}
        for version, statements in MIGRATIONS:
            if version in applied:
                continue
            for sql in statements:
                await tx.execute(sql)
            await tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", version, time.time()
            )
    return MIGRATIONS[-1][0]
