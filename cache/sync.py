"""Keeping every replica's semantic index in step through Redis.

Each entry's question metadata (scope, text, vector, expiry) is persisted next to its answer
as ``{key}|m`` with the same TTL, and every change is published on ``{namespace}events``:
``add`` (with the metadata), ``del`` (a key) or ``delp`` (a prefix). A replica loads all
persisted metadata at start, then applies events from other replicas (its own are skipped by
origin id). A missed event heals itself: a hit whose answer is gone is removed on lookup.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import orjson
from redis.asyncio import Redis

from cache.embedders import Vectors
from cache.stores import RedisStore, _glob_escape

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EntryMeta:
    key: str
    scope: str
    text: str
    vector: Vectors
    expires_at: float

    def dumps(self) -> bytes:
        return orjson.dumps({
            "key": self.key, "scope": self.scope, "text": self.text, "exp": self.expires_at,
            "vec": base64.b64encode(self.vector.astype(np.float32).tobytes()).decode(),
        })

    @classmethod
    def loads(cls, raw: bytes | str) -> EntryMeta:
        d = orjson.loads(raw)
        vec = np.frombuffer(base64.b64decode(d["vec"]), dtype=np.float32).copy()
        return cls(d["key"], d["scope"], d["text"], vec, float(d["exp"]))


class IndexSync(Protocol):
    async def publish_add(self, meta: EntryMeta, ttl: float) -> None: ...

    async def publish_remove(self, key: str) -> None: ...

    async def publish_remove_prefix(self, prefix: str) -> None: ...


class RedisIndexSync:
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.client: Redis = store.client
        self.channel = store.namespace + "events"
        self.origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def publish_add(self, meta: EntryMeta, ttl: float) -> None:
        raw = meta.dumps()
        await self.store.set(meta.key + "|m", raw, ttl)
        await self._publish({"op": "add", "meta": raw.decode()})

    async def publish_remove(self, key: str) -> None:
        await self.store.delete(key + "|m")
        await self._publish({"op": "del", "key": key})

    async def publish_remove_prefix(self, prefix: str) -> None:
        await self._publish({"op": "delp", "prefix": prefix})

    async def _publish(self, event: dict[str, Any]) -> None:
        event["origin"] = self.origin
        await self.client.publish(self.channel, orjson.dumps(event))

    async def start(self, on_add: Callable[[EntryMeta], None], on_remove: Callable[[str], object],
                    on_remove_prefix: Callable[[str], object]) -> None:
        """Subscribe first, then load persisted entries, so nothing falls between the two."""
        handlers = (on_add, on_remove, on_remove_prefix)
        self._task = asyncio.get_running_loop().create_task(self._listen(handlers))
        await self._ready.wait()
        pattern = _glob_escape(self.store.namespace) + "*|s|*|m"
        async for name in self.client.scan_iter(match=pattern, count=500):
            raw = await self.store.get(name.decode()[len(self.store.namespace):])
            if raw is not None:
                on_add(EntryMeta.loads(raw))

    async def _listen(self, handlers: tuple[Callable[[EntryMeta], None], Callable[[str], object],
                                            Callable[[str], object]]) -> None:
        on_add, on_remove, on_remove_prefix = handlers
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            self._ready.set()
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                event = orjson.loads(message["data"])
                if event.get("origin") == self.origin:
                    continue
                op = event.get("op")
                if op == "add":
                    on_add(EntryMeta.loads(event["meta"]))
                elif op == "del":
                    on_remove(event["key"])
                elif op == "delp":
                    on_remove_prefix(event["prefix"])
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                await cast(Any, pubsub).aclose()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
