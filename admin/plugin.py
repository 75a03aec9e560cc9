"""How admin plugs into the gateway: ``setup(app, cfg)``, called by gateway.app when the
config has an ``admin:`` section (the gateway imports this module by name, never statically).

It installs, on the gateway app:
- AUTHENTICATOR: API keys (a placeholder that refuses until startup has opened the store);
- ADMISSION: rate limits + budget reservation + usage metering (set at startup);
- a cleanup context owning the database, Redis, the usage flush task, the pub/sub listener and,
  with metrics on, the task exporting each tenant's budget use (turnout_budget_used_ratio);
- a CONFIG_LISTENERS entry: a reload (SIGHUP) rebuilds the price catalogue;
- the admin API as a sub-app at ``/admin/v1`` with its own admin-key middleware.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from admin.api import ADMIN_STATE, create_admin_app
from admin.budget_export import run_budget_export
from admin.state import AdminState, open_state
from configs import GatewayConfig
from gateway.errors import AuthenticationError
from gateway.interfaces import Principal
from gateway.keys import ADMISSION, AUTHENTICATOR, CONFIG_LISTENERS, TASKS
from gateway.observe import RECORDER

ADMIN_MOUNT = "/admin/v1"


class _Starting:
    def authenticate_now(self, request: web.Request) -> Principal:
        raise AuthenticationError("the gateway is starting")

    async def authenticate(self, request: web.Request) -> Principal:
        raise AuthenticationError("the gateway is starting")


def setup(app: web.Application, cfg: GatewayConfig) -> None:
    app[AUTHENTICATOR] = _Starting()
    app.cleanup_ctx.append(_admin_ctx(cfg))
    app.add_subapp(ADMIN_MOUNT, create_admin_app())


def _admin_ctx(cfg: GatewayConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def admin_ctx(app: web.Application) -> AsyncIterator[None]:
        state = await open_state(cfg)
        app[ADMIN_STATE] = state
        app[AUTHENTICATOR] = state.authenticator
        app[ADMISSION] = state.admission
        app[CONFIG_LISTENERS].append(state.apply_config)
        exporter = _start_budget_export(app, state)
        try:
            yield
        finally:
            app[CONFIG_LISTENERS].remove(state.apply_config)
            if exporter is not None:  # an endless loop: cancel it, never drain it
                exporter.cancel()
                await asyncio.gather(exporter, return_exceptions=True)
            # aiohttp runs on_shutdown (the gateway's drain) before in-flight handlers finish;
            # by now they have settled their tickets; state.close() waits for the quota
            # store's pending settles, then flushes usage.
            await app[TASKS].drain(cfg.server.grace_period)
            await state.close()

    return admin_ctx


def _start_budget_export(app: web.Application, state: AdminState) -> asyncio.Task[None] | None:
    if RECORDER not in app:
        return None
    recorder = app[RECORDER]

    def set_ratio(tenant: str, ratio: float) -> None:
        recorder.families.budget_used.labels(tenant=recorder.tenant_label(tenant)).set(ratio)

    return asyncio.get_running_loop().create_task(run_budget_export(state, set_ratio), name="budget-export")
