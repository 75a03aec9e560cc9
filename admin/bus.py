"""Cache invalidation across replicas: Redis pub/sub on ``<prefix>admin:invalidate``.

Messages are ``key:<id>``, ``tenant:<id>`` or ``all``. ``publish`` applies the change to this
process first, then broadcasts; every replica's ``listen`` task applies it on receipt (so a
revocation takes effect everywhere within one pub/sub hop, milliseconds). Pub/sub is
fire-and-forget: after the listener (re)connects it clears the whole cache, since messages sent
while it was away are lost; the cache TTL bounds staleness in the meantime.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from admin.auth import KeyCache

log = logging.getLogger("turnout.admin.bus")


class InvalidationBus:
    def __init__(self, cache: KeyCache, redis: Any | None, prefix: str) -> None:
        self._cache = cache
        self._redis = redis
        self.channel = f"{prefix}admin:invalidate"
        self.ready = asyncio.Event()

    def apply(self, message: str) -> None:
        kind, _, ident = message.partition(":")
        if kind == "key":
            self._cache.invalidate_key(ident)
        elif kind == "tenant":
            self._cache.invalidate_tenant(ident)
        else:
            self._cache.clear()

    async def publish(self, message: str) -> None:
        self.apply(message)
        if self._redis is not None:
            await self._redis.publish(self.channel, message)

    async def listen(self) -> None:
        """Run until cancelled; reconnects with backoff."""
        if self._redis is None:
            self.ready.set()
            return
        delay = 0.1
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: keep serving from cache, retry
                self.ready.clear()
                log.warning("invalidation listener lost Redis (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _listen_once(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[union-attr]
        try:
            await pubsub.subscribe(self.channel)
            self._cache.clear()
            self.ready.set()
            async for message in pubsub.listen():
                data = message.get("data")
                if isinstance(data, bytes):
                    data = data.decode()
                if isinstance(data, str):
                    self.apply(data)
        finally:
            await pubsub.aclose()
