"""Persistent admin state: tenants, keys, usage events. One code path for both engines.

Contracts: the secret of a key never reaches this module except to be hashed by keygen;
``insert_usage`` adds a batch of events to daily totals once per batch (``usage_rollup``: a
retried or replayed batch never double counts);
``key_with_tenant`` is the single query a key-cache miss costs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import orjson

from admin import keygen, usage_rollup
from admin.db import Database, Row, fetchone
from admin.errors import Conflict, InvalidRequest, NotFound
from admin.models import ApiKey, Limits, Tenant

_TENANT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEY_COLUMNS = "id, tenant_id, hash, name, limits, created_at, expires_at, revoked_at, replaced_by"
_GROUPS = {"tenant": "tenant_id", "key": "key_id", "model": "model", "day": "day"}


def _dumps(limits: Limits) -> str:
    return orjson.dumps(limits.to_json()).decode()


def _tenant(row: Row) -> Tenant:
    return Tenant(row["id"], row["name"], Limits.from_json(orjson.loads(row["limits"])), row["created_at"])


def _key(row: Row, prefix: str = "") -> ApiKey:
    return ApiKey(
        id=row[prefix + "id"], tenant_id=row[prefix + "tenant_id"], hash=row[prefix + "hash"],
        name=row[prefix + "name"], limits=Limits.from_json(orjson.loads(row[prefix + "limits"])),
        created_at=row[prefix + "created_at"], expires_at=row[prefix + "expires_at"],
        revoked_at=row[prefix + "revoked_at"], replaced_by=row[prefix + "replaced_by"],
    )


BATCH_RETENTION_S = 2 * 86400  # applied batch ids kept this long (a spill replayed later counts again)
_PRUNE_EVERY = 100  # batches between prunes of usage_batches


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._batches = 0  # usage batches applied by this process (prunes usage_batches now and then)

    # -- tenants -------------------------------------------------------------------------
    async def create_tenant(self, tenant_id: str, name: str, limits: Limits) -> Tenant:
        if not _TENANT_ID.match(tenant_id):
            raise InvalidRequest("tenant id must be 1-64 characters of A-Z a-z 0-9 . _ -")
        if await self.tenant(tenant_id) is not None:
            raise Conflict(f"tenant {tenant_id!r} exists")
        now = time.time()
        await self.db.execute(
            "INSERT INTO tenants (id, name, limits, created_at) VALUES ($1, $2, $3, $4)",
            tenant_id, name, _dumps(limits), now,
        )
        return Tenant(tenant_id, name, limits, now)

    async def tenant(self, tenant_id: str) -> Tenant | None:
        row = await fetchone(self.db, "SELECT * FROM tenants WHERE id = $1", tenant_id)
        return _tenant(row) if row else None

    async def tenants(self) -> list[Tenant]:
        return [_tenant(r) for r in await self.db.fetch("SELECT * FROM tenants ORDER BY id")]

    async def set_tenant_limits(self, tenant_id: str, limits: Limits) -> Tenant:
        if await self.tenant(tenant_id) is None:
            raise NotFound(f"tenant {tenant_id!r}")
        await self.db.execute("UPDATE tenants SET limits = $1 WHERE id = $2", _dumps(limits), tenant_id)
        tenant = await self.tenant(tenant_id)
        assert tenant is not None
        return tenant

    # -- keys ----------------------------------------------------------------------------
    async def create_key(
        self, tenant_id: str, name: str = "", limits: Limits | None = None,
        expires_at: float | None = None,
    ) -> tuple[ApiKey, str]:
        """The new key and its secret, which the caller shows once."""
        if await self.tenant(tenant_id) is None:
            raise NotFound(f"tenant {tenant_id!r}")
        return await self._insert_key(self.db, tenant_id, name, limits or Limits(), expires_at)

    async def _insert_key(
        self, h: Any, tenant_id: str, name: str, limits: Limits, expires_at: float | None,
    ) -> tuple[ApiKey, str]:
        key_id, secret = keygen.new_key()
        key = ApiKey(key_id, tenant_id, keygen.hash_key(secret), name, limits, time.time(), expires_at)
        await h.execute(
            f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)",
            key.id, key.tenant_id, key.hash, key.name, _dumps(limits), key.created_at, expires_at,
        )
        return key, secret

    async def key(self, key_id: str) -> ApiKey | None:
        row = await fetchone(self.db, f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return _key(row) if row else None

    async def key_with_tenant(self, key_id: str) -> tuple[ApiKey, Tenant] | None:
        row = await fetchone(
            self.db,
            "SELECT k.id AS k_id, k.tenant_id AS k_tenant_id, k.hash AS k_hash, k.name AS k_name, "
            "k.limits AS k_limits, k.created_at AS k_created_at, k.expires_at AS k_expires_at, "
            "k.revoked_at AS k_revoked_at, k.replaced_by AS k_replaced_by, "
            "t.id, t.name, t.limits, t.created_at "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1",
            key_id,
        )
        return (_key(row, "k_"), _tenant(row)) if row else None

    async def keys(self, tenant_id: str) -> list[ApiKey]:
        rows = await self.db.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at", tenant_id
        )
        return [_key(r) for r in rows]

    async def _usable_key(self, key_id: str) -> ApiKey:
        key = await self.key(key_id)
        if key is None:
            raise NotFound(f"key {key_id!r}")
        if not key.usable():
            raise Conflict(f"key {key_id!r} is revoked or expired")
        return key

    async def rotate_key(self, key_id: str, grace_s: float) -> tuple[ApiKey, str]:
        """A new key with the old one's tenant, name and limits; the old one keeps working for
        ``grace_s`` seconds (0: stops now) and records its successor."""
        old = await self._usable_key(key_id)
        until = time.time() + max(grace_s, 0.0)
        if old.expires_at is not None:
            until = min(until, old.expires_at)
        async with self.db.transaction() as tx:
            new, secret = await self._insert_key(tx, old.tenant_id, old.name, old.limits, old.expires_at)
            await tx.execute(
                "UPDATE api_keys SET expires_at = $1, replaced_by = $2 WHERE id = $3", until, new.id, key_id
            )
        return new, secret

    async def revoke_key(self, key_id: str) -> ApiKey:
        if await self.key(key_id) is None:
            raise NotFound(f"key {key_id!r}")
        await self.db.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2", time.time(), key_id
        )
        key = await self.key(key_id)
        assert key is not None
        return key

    async def set_key_limits(self, key_id: str, limits: Limits) -> ApiKey:
        if await self.key(key_id) is None:
            raise NotFound(f"key {key_id!r}")
        await self.db.execute("UPDATE api_keys SET limits = $1 WHERE id = $2", _dumps(limits), key_id)
        key = await self.key(key_id)
        assert key is not None
        return key

    # -- usage ---------------------------------------------------------------------------
    async def insert_usage(self, batch: usage_rollup.UsageBatch) -> None:
        """Add a batch to the daily totals, once: a batch whose id was applied already (a retry
        after an unacknowledged commit, a replayed spill) changes nothing."""
        totals = batch.rows
        if not totals:
            return
        now = time.time()
        async with self.db.transaction() as tx:
            fresh = await tx.fetch(
                "INSERT INTO usage_batches (id, applied_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id",
                batch.id, now)
            if not fresh:
                return
            start = 0
            for size in usage_rollup.chunks(len(totals)):
                await tx.execute(usage_rollup.upsert_sql(size),
                                 *[value for row in totals[start:start + size] for value in row])
                start += size
            self._batches += 1
            if self._batches % _PRUNE_EVERY == 1:
                await tx.execute("DELETE FROM usage_batches WHERE applied_at < $1", now - BATCH_RETENTION_S)

    async def spent_since(self, scope: str, scope_id: str, since: float) -> int:
        """Settled nano-USD of a tenant (scope 'tenant') or key (scope 'key') from the UTC day
        containing ``since`` on (budget periods start at midnight UTC, so it is exact for them)."""
        column = "tenant_id" if scope == "tenant" else "key_id"
        row = await fetchone(
            self.db,
            f"SELECT CAST(COALESCE(SUM(cost_nusd), 0) AS BIGINT) AS spent FROM usage_daily "
            f"WHERE {column} = $1 AND day >= $2",
            scope_id, usage_rollup.day_of(since),
        )
        return int(row["spent"]) if row else 0

    async def usage(
        self, *, filters: dict[str, str], day_from: str | None, day_to: str | None,
        group_by: Sequence[str],
    ) -> list[Row]:
        """Totals grouped by any of tenant, key, model, day, filtered by equality and day range."""
        where, args = [], []
        for name, value in filters.items():
            args.append(value)
            where.append(f"{_GROUPS[name]} = ${len(args)}")
        for op, day in ((">=", day_from), ("<=", day_to)):
            if day is not None:
                args.append(day)
                where.append(f"day {op} ${len(args)}")
        groups = [_GROUPS[g] for g in group_by]
        select = ", ".join([*groups, *(f"CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}" for c in usage_rollup.SUMS)])
        sql = f"SELECT {select} FROM usage_daily"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if groups:
            sql += f" GROUP BY {', '.join(groups)} ORDER BY {', '.join(groups)}"
        rows = await self.db.fetch(sql, *args)
        for row in rows:
            if row.get("key_id") == "":
                row["key_id"] = None  # stored as '' (part of the primary key) for keyless usage
        return [r for r in rows if r["requests"]]
