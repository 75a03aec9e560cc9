"""The small interfaces through which optional layers plug into the request path.

The gateway owns these Protocols and ships trivial defaults, so it runs with nothing else
configured. ``admin`` implements Authenticator/Admission; ``cache`` is adapted to
ResponseCache by gateway code. Nothing here imports admin or cache.

Authenticator and Admission each have a synchronous ``*_now`` twin for the case that needs no
I/O, so the usual request creates no coroutine for them; the async method is the fallback.

Order on the request path (see pipeline.py):
    authenticate → parse/validate → admit (reserve) → cache lookup → execute → settle/release
A Ticket is always finished exactly once: ``settle`` after a completed response (including a
cache hit), ``release`` after any failure or cancellation. Both are synchronous and must not
block: an implementation that needs I/O to finish (admin's Redis scripts) starts it itself and
owns it until its own cleanup context closes (which runs after in-flight handlers are done).
Keeping them synchronous spares every request a task spawn on the hot path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from backends.base import Usage
from configs.schema import GatewayConfig

# Called with each config a reload (SIGHUP) has put in place, after the swap, in order of
# registration: a plug-in applies what it can change live (admin: the price catalogue). A
# listener that raises is logged; the reload stands.
ConfigListener = Callable[[GatewayConfig], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``tenant`` scopes caches, limits and usage."""

    tenant: str = "default"
    key_id: str | None = None
    allowed_models: frozenset[str] | None = None  # None: every model
    attributes: Mapping[str, Any] = field(default_factory=dict)


ANONYMOUS = Principal()


class Authenticator(Protocol):
    def authenticate_now(self, request: web.Request) -> Principal | None:
        """The caller when it is known without I/O (the request path's usual case: a returning
        client), else None: then the gateway awaits ``authenticate``. May raise like it."""
        ...

    async def authenticate(self, request: web.Request) -> Principal:
        """Return the caller or raise ``gateway.errors.AuthenticationError``."""
        ...


@dataclass(slots=True)  # not frozen: built per request, frozen __init__ costs ~4x
class Estimate:
    """What admission knows before the request runs."""

    model: str
    prompt_tokens: int
    max_output_tokens: int
    request_id: str


@dataclass(slots=True)  # not frozen: built per request, frozen __init__ costs ~4x
class Outcome:
    """What happened, for settling budgets and writing usage events."""

    model: str
    deployment: str | None
    usage: Usage
    status: int
    latency_s: float
    cached: bool = False
    stream: bool = False


class Ticket(Protocol):
    def settle(self, outcome: Outcome) -> None: ...

    def release(self, status: int) -> None: ...


class Admission(Protocol):
    def admit_now(self, principal: Principal, estimate: Estimate) -> Ticket | None:
        """``admit`` when it can decide without I/O (the request path's usual case), else None:
        then the gateway awaits ``admit``. Raises like ``admit``."""
        ...

    async def admit(self, principal: Principal, estimate: Estimate) -> Ticket:
        """Reserve rate-limit and budget capacity or raise ``RateLimited``/``BudgetExceeded``."""
        ...


class OpenAuthenticator:
    """Auth off: every caller is the default tenant. Used by the embedded demo config."""

    def authenticate_now(self, request: web.Request) -> Principal:
        return ANONYMOUS

    async def authenticate(self, request: web.Request) -> Principal:
        return ANONYMOUS


class _NoopTicket:
    def settle(self, outcome: Outcome) -> None:
        return None

    def release(self, status: int) -> None:
        return None


NOOP_TICKET: Ticket = _NoopTicket()


class AdmitAll:
    def admit_now(self, principal: Principal, estimate: Estimate) -> Ticket:
        return NOOP_TICKET

    async def admit(self, principal: Principal, estimate: Estimate) -> Ticket:
        return NOOP_TICKET


@dataclass(frozen=True, slots=True)
class CacheQuery:
    """Everything that may change a cached answer. Built by the gateway, consumed by the cache
    adapter; ``body`` is the validated OpenAI request body (client's model alias)."""

    tenant: str
    model: str
    body: Mapping[str, Any]
    stream: bool
    control: frozenset[str] = frozenset()  # from the x-turnout-cache header: bypass, refresh, no-store
    # The adapter's scratch space for this request: the pipeline passes the same query object to
    # lookup and to store, so what lookup derived (the cache key) is not computed twice.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: dict[str, Any]  # a chat.completion object
    kind: str  # "exact" | "semantic"
    key: str


class ResponseCache(Protocol):
    async def lookup(self, query: CacheQuery) -> CachedAnswer | None: ...

    def store(self, query: CacheQuery, body: dict[str, Any]) -> None:
        """Schedule a write of a complete, successful answer; never blocks the response."""
        ...


class NoCache:
    async def lookup(self, query: CacheQuery) -> CachedAnswer | None:
        return None

    def store(self, query: CacheQuery, body: dict[str, Any]) -> None:
        return None
