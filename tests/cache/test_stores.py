from __future__ import annotations

from redis.asyncio import Redis

from cache.stores import MemoryStore, RedisStore, compress, decompress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_lru_is_bounded_in_bytes() -> None:
    evicted: list[str] = []
    store = MemoryStore(max_bytes=300, on_evict=evicted.append)
    for i in range(10):
        await store.set(f"k{i}", b"x" * 50, ttl=60)
        assert store.used_bytes <= 300
        await store.get("k0")  # keep k0 hot
    assert await store.get("k0") is not None
    assert await store.get("k1") is None and "k1" in evicted
    assert await store.get("k9") is not None
    await store.set("huge", b"x" * 1000, ttl=60)  # larger than the bound: not stored
    assert await store.get("huge") is None and store.used_bytes <= 300


async def test_memory_ttl_expires() -> None:
    clock = Clock()
    store = MemoryStore(max_bytes=10_000, clock=clock)
    await store.set("a", b"1", ttl=5)
    clock.now += 4.9
    assert await store.get("a") == b"1"
    clock.now += 0.2
    assert await store.get("a") is None and store.used_bytes == 0


async def test_memory_delete_prefix() -> None:
    store = MemoryStore(max_bytes=10_000)
    for key in ("t1|m|a", "t1|m|b", "t2|m|a"):
        await store.set(key, b"v", ttl=60)
    assert await store.delete_prefix("t1|") == 2
    assert await store.get("t2|m|a") == b"v"


def test_compression_round_trip() -> None:
    big = b"hello world " * 100
    assert len(compress(big)) < len(big) and decompress(compress(big)) == big
    assert decompress(compress(b"tiny")) == b"tiny"


async def test_redis_round_trip_compressed_with_ttl(redis: Redis, namespace: str) -> None:
    store = RedisStore(redis, namespace)
    value = b'{"answer": "' + b"abc " * 200 + b'"}'
    await store.set("t|m|e|1", value, ttl=30)
    assert await store.get("t|m|e|1") == value
    raw = await redis.get(namespace + "t|m|e|1")
    assert raw is not None and len(raw) < len(value)  # stored compressed
    assert 0 < await redis.pttl(namespace + "t|m|e|1") <= 30_000
    await store.set("t|m|e|2", b"v", ttl=30)
    await store.set("u|m|e|1", b"v", ttl=30)
    assert await store.delete_prefix("t|") == 2
    assert await store.get("u|m|e|1") == b"v"
    assert await store.delete("u|m|e|1") and await store.get("u|m|e|1") is None
