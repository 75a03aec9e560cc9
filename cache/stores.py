"""Byte stores for cached answers: in-process LRU, or Redis shared between replicas.

Contract for both: ``get`` returns the bytes last ``set`` under a key until its TTL passes or
it is deleted/evicted; ``delete_prefix`` removes every key starting with a prefix (admin path,
may scan). Keys are plain strings; the Redis store prefixes them with its namespace and
compresses values (zlib) above a small size.
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import BlockingConnectionPool, Redis

_RAW, _ZLIB = b"\x00", b"\x01"
_COMPRESS_ABOVE = 256


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """LRU bounded by the total size of keys + values in bytes; expired entries are dropped
    on access and before evicting live ones. ``on_evict`` is told about every LRU eviction."""

    def __init__(self, max_bytes: int, on_evict: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._on_evict = on_evict
        self._clock = clock

    def __len__(self) -> int:
        return len(self._data)

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self.used_bytes -= len(key) + len(value)

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return item[1]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        size = len(key) + len(value)
        if key in self._data:
            self._drop(key)
        if size > self.max_bytes:
            return
        self._data[key] = (self._clock() + ttl, value)
        self.used_bytes += size
        if self.used_bytes > self.max_bytes:
            self._make_room()

    def _make_room(self) -> None:
        now = self._clock()
        for key in [k for k, (exp, _) in self._data.items() if exp <= now]:
            self._drop(key)
        while self.used_bytes > self.max_bytes:
            key = next(iter(self._data))
            self._drop(key)
            if self._on_evict is not None:
                self._on_evict(key)

    async def delete(self, key: str) -> bool:
        if key in self._data:
            self._drop(key)
            return True
        return False

    async def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self._data if k.startswith(prefix)]
        for key in keys:
            self._drop(key)
        return len(keys)

    async def aclose(self) -> None:
        self._data.clear()
        self.used_bytes = 0


def compress(value: bytes) -> bytes:
    if len(value) < _COMPRESS_ABOVE:
        return _RAW + value
    return _ZLIB + zlib.compress(value, 3)


def decompress(value: bytes) -> bytes:
    return zlib.decompress(value[1:]) if value[:1] == _ZLIB else value[1:]


def redis_client(url: str, max_connections: int = 64) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
    return Redis.from_pool(pool)  # the client owns (and closes) the pool


class RedisStore:
    """Values compressed, TTL enforced by Redis (PX). Size bound: Redis' own maxmemory policy."""

    def __init__(self, client: Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def get(self, key: str) -> bytes | None:
        raw = await self.client.get(self.namespace + key)
        if raw is None:
            return None
        return decompress(raw if isinstance(raw, bytes) else raw.encode())

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.client.set(self.namespace + key, compress(value), px=max(1, int(ttl * 1000)))

    async def delete(self, key: str) -> bool:
        return bool(await self.client.delete(self.namespace + key))

    async def delete_prefix(self, prefix: str) -> int:
        count = 0
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=_glob_escape(self.namespace + prefix) + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                count += int(await self.client.delete(*batch))
                batch = []
        if batch:
            count += int(await self.client.delete(*batch))
        return count

    async def aclose(self) -> None:
        await self.client.aclose()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

