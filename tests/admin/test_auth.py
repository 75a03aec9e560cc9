from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import make_mocked_request

from admin import keygen
from admin.auth import SCOPES_ATTR, KeyAuthenticator, KeyCache
from admin.bus import InvalidationBus
from admin.models import Limits
from admin.store import Store
from gateway.errors import AuthenticationError
from tests.admin.conftest import REDIS_URL


class CountingStore:
    """Wraps a Store and counts key_with_tenant queries (the one query a miss may cost)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queries = 0

    async def key_with_tenant(self, key_id: str) -> object:
        self.queries += 1
        await asyncio.sleep(0.01)
        return await self.store.key_with_tenant(key_id)


def request(key: str | None) -> object:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return make_mocked_request("POST", "/v1/chat/completions", headers=headers)


async def test_keygen_shape_and_constant_time_match() -> None:
    key_id, secret = keygen.new_key()
    assert keygen.key_id_of(secret) == key_id and len(key_id) == 10
    assert keygen.matches(secret, keygen.hash_key(secret))
    assert not keygen.matches(secret + "x", keygen.hash_key(secret))
    assert keygen.key_id_of("sk-openai") is None and keygen.key_id_of("tk-short-x") is None


async def test_authenticate_hits_the_cache_after_one_query(store: Store) -> None:
    await store.create_tenant("acme", "Acme", Limits(models=frozenset({"a", "b"}), rpm=5))
    key, secret = await store.create_key("acme", "k", Limits(models=frozenset({"b", "c"})))
    counting = CountingStore(store)
    auth = KeyAuthenticator(KeyCache(counting, ttl=60))  # type: ignore[arg-type]
    principals = await asyncio.gather(*(auth.authenticate(request(secret)) for _ in range(50)))  # type: ignore[arg-type]
    assert counting.queries == 1  # concurrent misses share one query
    p = principals[0]
    assert p.tenant == "acme" and p.key_id == key.id and p.allowed_models == frozenset({"b"})
    # the key limits only models (no counter): only the tenant is a counted scope
    assert [s.id for s in p.attributes[SCOPES_ATTR]] == ["t:acme"]
    for bad in (None, "tk-0123456789-" + "x" * 43, secret[:-1] + ("B" if secret.endswith("A") else "A"), "Bearer"):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(request(bad))  # type: ignore[arg-type]
    assert counting.queries == 2  # the unknown id was looked up once and cached negatively
    with pytest.raises(AuthenticationError):
        await auth.authenticate(request("tk-0123456789-" + "y" * 43))  # type: ignore[arg-type]
    assert counting.queries == 2


async def test_remembered_secrets_are_bounded_and_still_revocable(store: Store) -> None:
    await store.create_tenant("acme", "Acme", Limits())
    keys = [await store.create_key("acme", f"k{i}", Limits()) for i in range(3)]
    cache = KeyCache(store, ttl=60)
    auth = KeyAuthenticator(cache, remember=2)
    for _, secret in keys:
        await auth.authenticate(request(secret))  # type: ignore[arg-type]
    assert list(auth._verified) == [f"Bearer {keys[1][1]}", f"Bearer {keys[2][1]}"]  # the oldest was forgotten
    forged = keys[2][1][:-1] + ("B" if keys[2][1].endswith("A") else "A")  # same id, wrong secret
    with pytest.raises(AuthenticationError, match="invalid"):
        await auth.authenticate(request(forged))  # type: ignore[arg-type]
    assert f"Bearer {forged}" not in auth._verified
    await store.revoke_key(keys[2][0].id)
    cache.invalidate_key(keys[2][0].id)  # what the revocation broadcast does
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate(request(keys[2][1]))  # type: ignore[arg-type]


async def test_ttl_bound_and_expiry(store: Store) -> None:
    await store.create_tenant("acme", "Acme", Limits())
    _, secret = await store.create_key("acme", expires_at=time.time() + 0.2)
    now = [0.0]
    cache = KeyCache(store, ttl=5, size=2, clock=lambda: now[0])
    auth = KeyAuthenticator(cache)
    await auth.authenticate(request(secret))  # type: ignore[arg-type]
    await asyncio.sleep(0.25)
    with pytest.raises(AuthenticationError, match="expired"):  # the fast path refuses it too
        auth.authenticate_now(request(secret))  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError, match="expired"):  # expiry needs no query
        await auth.authenticate(request(secret))  # type: ignore[arg-type]
    for i in range(5):
        await cache.get(f"{i:010d}")
    assert len(cache) == 2  # LRU bound


async def test_revocation_reaches_other_processes_within_a_second(
    store: Store, redis_prefix: str, redis_client: aioredis.Redis,
) -> None:
    """Three 'replicas' (own cache, own Redis connection, own listener) share one store."""
    await store.create_tenant("acme", "Acme", Limits())
    key, secret = await store.create_key("acme")
    replicas = []
    for _ in range(3):
        client = aioredis.Redis.from_url(REDIS_URL)
        cache = KeyCache(store, ttl=3600)
        bus = InvalidationBus(cache, client, redis_prefix)
        task = asyncio.get_running_loop().create_task(bus.listen())
        await asyncio.wait_for(bus.ready.wait(), 2)
        replicas.append((client, bus, task, KeyAuthenticator(cache)))
    try:
        for *_, auth in replicas:
            await auth.authenticate(request(secret))  # type: ignore[arg-type]
        start = time.perf_counter()
        await store.revoke_key(key.id)
        await replicas[0][1].publish(f"key:{key.id}")
        pending = [auth for *_, auth in replicas]
        while pending:
            assert time.perf_counter() - start < 1.0
            still = []
            for auth in pending:
                try:
                    await auth.authenticate(request(secret))  # type: ignore[arg-type]
                    still.append(auth)
                except AuthenticationError:
                    pass
            pending = still
            await asyncio.sleep(0.005)
    finally:
        for client, _, task, _ in replicas:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()
