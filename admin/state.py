"""Everything the admin layer holds for one gateway process, opened and closed as a unit.

Opening order: database (+ migrations) → Redis (optional) → key cache and invalidation
listener → price catalogue → usage recorder (replays spills) → quota store → admission.
Closing runs in reverse; the usage recorder flushes before the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from admin.admission import QuotaAdmission
from admin.auth import KeyAuthenticator, KeyCache
from admin.bus import InvalidationBus
from admin.db import Database, connect
from admin.migrations import migrate
from admin.pricing import build_catalogue, load_litellm_map
from admin.quota import QuotaStore, Scope
from admin.quota_memory import MemoryQuota
from admin.quota_redis import RedisQuota
from admin.store import Store
from admin.usage import UsageRecorder
from configs import GatewayConfig
from configs.admin import AdminConfig

log = logging.getLogger("turnout.admin")


@dataclass(slots=True)
class AdminState:
    cfg: AdminConfig
    db: Database
    store: Store
    redis: Any | None
    cache: KeyCache
    bus: InvalidationBus
    usage: UsageRecorder
    quota: QuotaStore
    admission: QuotaAdmission
    authenticator: KeyAuthenticator
    listener: asyncio.Task[None]

    async def apply_config(self, cfg: GatewayConfig) -> None:
        """After a reload: the catalogue is rebuilt from the new models' prices (and
        ``admin.gpu_prices``) for requests admitted from now on; a ticket keeps the price it was
        admitted at, so its reservation and its settle agree. Every other admin setting is
        read once at startup and needs a restart; a change to one is logged."""
        price_map = dict(await asyncio.to_thread(load_litellm_map))
        # The admission holds the one catalogue (the admin API's /pricing reads it there too).
        self.admission.catalogue = build_catalogue(cfg, price_map)
        log.info("price catalogue rebuilt after a reload")
        admin = cfg.admin or AdminConfig()
        if dataclasses.replace(admin, gpu_prices=self.cfg.gpu_prices) != self.cfg:
            log.warning("admin settings other than prices changed: they apply after a restart")

    async def close(self) -> None:
        self.listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.listener
        await self.quota.drain()  # settles started by the last requests reach Redis first
        await self.usage.stop()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.close()


def open_redis(url: str) -> Any:
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=200, timeout=5)
    return aioredis.Redis(connection_pool=pool)


async def open_state(cfg: GatewayConfig, *, price_map: dict[str, Any] | None = None) -> AdminState:
    admin = cfg.admin or AdminConfig()
    db = await connect(admin.database, schema=admin.schema)
    await migrate(db)
    store = Store(db)
    redis = open_redis(cfg.redis_url) if cfg.redis_url else None
    cache = KeyCache(store, admin.key_cache_ttl, admin.key_cache_size)
    bus = InvalidationBus(cache, redis, admin.redis_prefix)
    listener = asyncio.get_running_loop().create_task(bus.listen(), name="admin-invalidation")
    if price_map is None:
        price_map = dict(await asyncio.to_thread(load_litellm_map))
    catalogue = build_catalogue(cfg, price_map)
    usage = UsageRecorder(
        store.insert_usage, admin.usage.spill_dir, batch=admin.usage.batch,
        interval=admin.usage.flush_interval, capacity=admin.usage.queue,
    )
    await usage.start()

    async def spent(scope: Scope, since: float) -> int:
        return await store.spent_since(scope.kind, scope.subject, since)

    quota: QuotaStore
    if redis is not None:
        quota = RedisQuota(redis, admin.redis_prefix, spent, admin.reservation_lease)
    else:
        quota = MemoryQuota(spent, admin.reservation_lease)
    admission = QuotaAdmission(quota, catalogue, usage)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(bus.ready.wait(), 2.0)
    return AdminState(admin, db, store, redis, cache, bus, usage, quota, admission,
                      KeyAuthenticator(cache), listener)
