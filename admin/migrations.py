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
    # Usage as daily totals instead of one row per request: a row per event cost SQLite ~5 us
    # of CPU per request on the gateway's core (PostgreSQL: a row per request across every
    # replica). Batches are idempotent by id (usage_batches), so a replayed spill counts once.
    # The per-event rows of version 1 are folded into the totals and the table dropped.
    (2, (
        """CREATE TABLE usage_daily (
            day TEXT NOT NULL,
            tenant_id TEXT NOT NULL,
            key_id TEXT NOT NULL,
            model TEXT NOT NULL,
            requests BIGINT NOT NULL,
            failed BIGINT NOT NULL,
            cached BIGINT NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            cost_nusd BIGINT NOT NULL,
            PRIMARY KEY (day, tenant_id, key_id, model))""",
        "CREATE INDEX usage_daily_tenant ON usage_daily (tenant_id, day)",
        "CREATE INDEX usage_daily_key ON usage_daily (key_id, day)",
        """CREATE TABLE usage_batches (
            id TEXT PRIMARY KEY,
            applied_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX usage_batches_applied ON usage_batches (applied_at)",
        """INSERT INTO usage_daily
            SELECT day, tenant_id, COALESCE(key_id, ''), model, COUNT(*),
                   CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT),
                   CAST(SUM(cached) AS BIGINT), CAST(SUM(prompt_tokens) AS BIGINT),
                   CAST(SUM(completion_tokens) AS BIGINT), CAST(SUM(cost_nusd) AS BIGINT)
            FROM usage_events GROUP BY day, tenant_id, COALESCE(key_id, ''), model""",
        "DROP TABLE usage_events",
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
