"""The application factory.

Lifetimes (aiohttp runs cleanup_ctx startups first, in order, and their cleanups in reverse):
  1. ``_core_ctx``: the process's one ClientSession and the first Runtime; closed last.
  2. plug-in contexts (cache, admin): their stores, pools and flush tasks.
  3. ``_drain_ctx``, appended last: nothing at startup; its cleanup runs FIRST.
  4. on_startup ``_build_pipeline``: after every context, so it sees the plug-ins' objects.
Shutdown (aiohttp AppRunner.cleanup): sites stop accepting → on_shutdown signal → in-flight
handlers get ``grace_period`` → cleanups in reverse. on_shutdown runs BEFORE in-flight handlers
finish, so background bookkeeping is drained in ``_drain_ctx``'s cleanup instead: after the
last handler, before any plug-in context closes the store that bookkeeping writes to.
Middleware order, outermost first:
  envelope (request id, every error → OpenAI JSON) → auth (only when configured) → handler.
The body limit is aiohttp's ``client_max_size`` (a 413 raised on read, mapped by envelope).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from configs.schema import GatewayConfig
from gateway.handlers import add_routes
from gateway.interfaces import AdmitAll, NoCache, OpenAuthenticator
from gateway.keys import (
    ADMISSION,
    AUTHENTICATOR,
    CONFIG_LISTENERS,
    HTTP_SESSION,
    PIPELINE,
    RESPONSE_CACHE,
    RUNTIME,
    TASKS,
)
from gateway.middleware import make_envelope
from gateway.observe import install as install_observability
from gateway.pipeline import Pipeline
from gateway.runtime import RuntimeHolder, build_runtime
from gateway.status import add_status_route
from gateway.tasks import TaskTracker
from gateway.tokens import TokenCounter

DRAIN_TIMEOUT_S = 10.0


def create_app(cfg: GatewayConfig) -> web.Application:
    app = web.Application(client_max_size=cfg.server.body_limit)
    app[AUTHENTICATOR] = OpenAuthenticator()
    app[ADMISSION] = AdmitAll()
    app[RESPONSE_CACHE] = NoCache()
    app[TASKS] = TaskTracker()
    app[CONFIG_LISTENERS] = []
    install_observability(app, cfg)  # outermost: sees every final status; serves a public /metrics
    app.cleanup_ctx.append(_core_ctx(cfg))
    if cfg.cache is not None:
        _install_cache(app, cfg)
    if cfg.admin is not None:
        # admin plugs in from above: gateway never imports it statically (layering contract).
        importlib.import_module("admin.plugin").setup(app, cfg)
    # Next after observability (plug-ins add no middlewares); auth inside it when installed.
    app.middlewares.append(make_envelope(None if isinstance(app[AUTHENTICATOR], OpenAuthenticator) else app))
    app.cleanup_ctx.append(_drain_ctx)
    app.on_startup.append(_build_pipeline)
    add_routes(app)
    add_status_route(app)
    return app


def _install_cache(app: web.Application, cfg: GatewayConfig) -> None:
    importlib.import_module("gateway.cache_adapter").install(app, cfg)


def _core_ctx(cfg: GatewayConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def core(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        app[HTTP_SESSION] = session
        runtime = build_runtime(cfg, session)
        app[RUNTIME] = RuntimeHolder(runtime)
        try:
            yield
        finally:
            await app[RUNTIME].current.aclose()
            await session.close()

    return core


async def _build_pipeline(app: web.Application) -> None:
    app[PIPELINE] = Pipeline(app[RUNTIME], app[TASKS], TokenCounter(), app[ADMISSION], app[RESPONSE_CACHE])


async def _drain_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[TASKS].drain(DRAIN_TIMEOUT_S)
