"""Key → principal on the request path, from an in-process TTL cache.

Contracts:
- A request costs no database query while its key is cached; a miss costs one query, shared
  by every request that misses on the same key at the same moment. Unknown key ids are cached
  too (negatively), so bad keys cannot hammer the database. The cache is bounded (oldest insert evicted first).
- Entries live ``ttl`` seconds. Revocations, rotations and limit changes evict entries at once
  in this process and, through ``bus.py`` (Redis pub/sub), in every replica; without Redis the
  TTL is the staleness bound for other processes.
- Expiry is checked on every request against the cached record (no query needed).
- The presented key is compared with the stored SHA-256 in constant time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from admin import keygen
from admin.models import ApiKey, Limits, Tenant
from admin.quota import Scope
from admin.store import Store
from gateway.errors import AuthenticationError
from gateway.interfaces import Principal

SCOPES_ATTR = "turnout.admin.scopes"


@dataclass(frozen=True, slots=True)
class Resolved:
    key: ApiKey
    tenant: Tenant
    principal: Principal
    # Wall-clock time from which the key is refused (-inf once revoked, inf if it never
    # expires): one comparison per request instead of ApiKey.usable.
    usable_until: float = float("inf")


def _allowed(a: Limits, b: Limits) -> frozenset[str] | None:
    if a.models is None:
        return b.models
    if b.models is None:
        return a.models
    return a.models & b.models


def resolve(key: ApiKey, tenant: Tenant) -> Resolved:
    """The principal carries only the scopes with a counter (SCOPES_ATTR), so admission does
    not filter them again per request."""
    scopes = tuple(s for s in (Scope(f"k:{key.id}", key.limits), Scope(f"t:{tenant.id}", tenant.limits))
                   if s.limits.limited)
    principal = Principal(
        tenant=tenant.id, key_id=key.id, allowed_models=_allowed(key.limits, tenant.limits),
        attributes={SCOPES_ATTR: scopes},
    )
    until = -math.inf if key.revoked_at is not None else (key.expires_at if key.expires_at is not None else math.inf)
    return Resolved(key, tenant, principal, until)


class KeyCache:
    def __init__(
        self, store: Store, ttl: float = 10.0, size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Resolved | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Resolved | None]] = {}
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key_id: str) -> tuple[float, Resolved | None] | None:
        """The entry if cached and not expired (no await: the request path's usual case)."""
        # No LRU move per hit: entries expire by TTL anyway, and the bound evicts the oldest
        # inserted (a hot key is re-inserted at its next miss).
        entry = self._entries.get(key_id)
        if entry is not None and entry[0] > self._clock():
            return entry
        return None

    async def get(self, key_id: str) -> Resolved | None:
        entry = self.fresh(key_id)
        if entry is not None:
            return entry[1]
        pending = self._pending.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Resolved | None] = asyncio.get_running_loop().create_future()
        self._pending[key_id] = future
        try:
            self.misses += 1
            row = await self._store.key_with_tenant(key_id)
            value = resolve(*row) if row is not None else None
            self._put(key_id, value)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._pending[key_id]

    def _put(self, key_id: str, value: Resolved | None) -> None:
        self._entries[key_id] = (self._clock() + self._ttl, value)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def invalidate_key(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def invalidate_tenant(self, tenant_id: str) -> None:
        for key_id in [k for k, (_, v) in self._entries.items() if v is not None and v.tenant.id == tenant_id]:
            del self._entries[key_id]

    def clear(self) -> None:
        self._entries.clear()


def bearer_token(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def bearer(request: web.Request) -> str | None:
    return bearer_token(request.headers.get("Authorization", "")) or request.headers.get("api-key") or None


class KeyAuthenticator:
    """gateway.interfaces.Authenticator backed by the key cache.

    An ``Authorization`` header whose secret once matched its stored hash is remembered
    (bounded, oldest forgotten first) with the key id and the key cache's record it matched,
    so a returning client costs two dict lookups instead of parsing, a SHA-256 and a
    constant-time compare. Only verified headers are remembered, so unknown keys cannot grow
    it. The remembered record must still be the one the key cache holds: revocations and
    changes evict it, and a refresh after the TTL replaces it, so the header is verified again
    (the full path, once per key per TTL). Expiry is checked on every request."""

    def __init__(self, cache: KeyCache, remember: int = 10_000) -> None:
        self._cache = cache
        # Authorization header once verified -> (key id, the key cache's record it matched); bounded.
        self._verified: dict[str, tuple[str, Resolved]] = {}
        self._remember = remember

    def authenticate_now(self, request: web.Request) -> Principal | None:
        """A returning client (a remembered header whose key is in the cache): no parsing, no
        hashing, no await. None otherwise; raises if the key has expired."""
        known = self._verified.get(request.headers.get("Authorization", ""))
        if known is None:
            return None
        entry = self._cache.fresh(known[0])
        if entry is None or entry[1] is not known[1]:
            return None
        return self._usable(known[1])

    async def authenticate(self, request: web.Request) -> Principal:
        return self.authenticate_now(request) or await self._authenticate(request)

    async def _authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization")
        presented = bearer(request)
        if presented is None:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        key_id = keygen.key_id_of(presented)
        if key_id is None:
            raise AuthenticationError("invalid API key")
        entry = self._cache.fresh(key_id)
        resolved = entry[1] if entry is not None else await self._cache.get(key_id)
        if resolved is None or not keygen.matches(presented, resolved.key.hash):
            raise AuthenticationError("invalid API key")
        if header is not None and bearer_token(header) == presented:
            self._remember_header(header, key_id, resolved)
        return self._usable(resolved)

    @staticmethod
    def _usable(resolved: Resolved) -> Principal:
        # Revocation evicts the key cache entry; expiry is checked here, on every request.
        if time.time() >= resolved.usable_until:
            raise AuthenticationError(f"API key {resolved.key.id} is revoked or expired")
        return resolved.principal

    def _remember_header(self, header: str, key_id: str, resolved: Resolved) -> None:
        if len(self._verified) >= self._remember:
            del self._verified[next(iter(self._verified))]
        self._verified[header] = (key_id, resolved)
