"""The admin REST API, mounted at ``/admin/v1`` (see docs/admin.md for every route).

Authentication: ``Authorization: Bearer <admin.admin_key>``, compared in constant time; with
no admin key configured every route answers 403. ``/openapi.json`` is public. Errors use
OpenAI's ``{"error": {...}}`` shape. Mutations evict the affected cache entries here and,
through the invalidation bus, in every replica before the response is sent.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from admin.errors import AdminError, InvalidRequest, NotFound
from admin.models import ApiKey, Limits, Tenant, nano_to_usd
from admin.quota import Scope, period_of
from admin.state import AdminState
from gateway.errors import error_body

ADMIN_STATE = web.AppKey("turnout_admin_state", AdminState)
PUBLIC = frozenset({"/admin/v1/openapi.json"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str, error_type: str) -> web.Response:
    return web.Response(body=error_body(message, error_type), status=status, content_type="application/json")


def _state(request: web.Request) -> AdminState:
    return request.config_dict[ADMIN_STATE]


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC:
        return await handler(request)
    expected = _state(request).cfg.admin_key
    if expected is None:
        return _error(403, "admin API disabled: set admin.admin_key", "permission_error")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        return _error(401, "invalid admin key", "authentication_error")
    try:
        return await handler(request)
    except AdminError as exc:
        return _error(exc.status, str(exc), "invalid_request_error")
    except ValueError as exc:  # Limits validation and malformed bodies
        return _error(400, str(exc), "invalid_request_error")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    return data


def _tenant_json(t: Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "limits": t.limits.to_json(), "created_at": t.created_at}


async def list_tenants(request: web.Request) -> web.Response:
    return _json({"data": [_tenant_json(t) for t in await _state(request).store.tenants()]})


async def create_tenant(request: web.Request) -> web.Response:
    body = await _body(request)
    tenant_id = body.get("id")
    if not isinstance(tenant_id, str):
        raise InvalidRequest("id (string) is required")
    tenant = await _state(request).store.create_tenant(
        tenant_id, str(body.get("name", tenant_id)), Limits.from_json(body.get("limits")))
    return _json(_tenant_json(tenant), 201)


async def _tenant(request: web.Request) -> Tenant:
    tenant = await _state(request).store.tenant(request.match_info["tenant"])
    if tenant is None:
        raise NotFound(f"tenant {request.match_info['tenant']!r}")
    return tenant


async def get_tenant(request: web.Request) -> web.Response:
    return _json(_tenant_json(await _tenant(request)))


async def set_tenant_limits(request: web.Request) -> web.Response:
    state = _state(request)
    limits = Limits.from_json((await _body(request)).get("limits"))
    tenant = await state.store.set_tenant_limits(request.match_info["tenant"], limits)
    await state.bus.publish(f"tenant:{tenant.id}")
    return _json(_tenant_json(tenant))


async def list_keys(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    return _json({"data": [k.public() for k in await _state(request).store.keys(tenant.id)]})


def _with_secret(key: ApiKey, secret: str) -> dict[str, Any]:
    return {**key.public(), "key": secret, "note": "store this key now: it is not shown again"}


async def create_key(request: web.Request) -> web.Response:
    body = await _body(request)
    expires_in = body.get("expires_in")
    if expires_in is not None and (not isinstance(expires_in, (int, float)) or expires_in <= 0):
        raise InvalidRequest("expires_in must be a positive number of seconds")
    key, secret = await _state(request).store.create_key(
        request.match_info["tenant"], str(body.get("name", "")), Limits.from_json(body.get("limits")),
        time.time() + expires_in if expires_in is not None else None,
    )
    return _json(_with_secret(key, secret), 201)


async def _key(request: web.Request) -> ApiKey:
    key = await _state(request).store.key(request.match_info["key"])
    if key is None:
        raise NotFound(f"key {request.match_info['key']!r}")
    return key


async def get_key(request: web.Request) -> web.Response:
    return _json((await _key(request)).public())


async def rotate_key(request: web.Request) -> web.Response:
    state = _state(request)
    grace = (await _body(request)).get("grace_s", 3600)
    if not isinstance(grace, (int, float)) or grace < 0:
        raise InvalidRequest("grace_s must be a number of seconds >= 0")
    key, secret = await state.store.rotate_key(request.match_info["key"], float(grace))
    await state.bus.publish(f"key:{request.match_info['key']}")
    return _json(_with_secret(key, secret), 201)


async def revoke_key(request: web.Request) -> web.Response:
    state = _state(request)
    key = await state.store.revoke_key(request.match_info["key"])
    await state.bus.publish(f"key:{key.id}")
    return _json(key.public())


async def set_key_limits(request: web.Request) -> web.Response:
    state = _state(request)
    limits = Limits.from_json((await _body(request)).get("limits"))
    key = await state.store.set_key_limits(request.match_info["key"], limits)
    await state.bus.publish(f"key:{key.id}")
    return _json(key.public())


async def budget_status(state: AdminState, scope: Scope) -> dict[str, Any]:
    now = time.time()
    period = period_of(scope.limits.budget_period, now)
    live = await state.quota.budget_state(scope, now)
    settled = await state.store.spent_since(scope.kind, scope.subject, period.start)
    spent = live[0] if live else settled
    budget = scope.limits.budget_usd
    return {
        "scope": scope.id, "budget_usd": budget, "period": scope.limits.budget_period,
        "alert": budget is not None and nano_to_usd(spent) >= budget * scope.limits.soft_alert,
        "period_id": period.id, "soft_alert": scope.limits.soft_alert,
        "spent_usd": nano_to_usd(spent),
        "reserved_usd": nano_to_usd(live[1] if live else 0),
        "recorded_usd": nano_to_usd(settled),
    }


async def tenant_budget(request: web.Request) -> web.Response:
    tenant = await _tenant(request)
    return _json(await budget_status(_state(request), Scope(f"t:{tenant.id}", tenant.limits)))


async def key_budget(request: web.Request) -> web.Response:
    key = await _key(request)
    return _json(await budget_status(_state(request), Scope(f"k:{key.id}", key.limits)))


async def usage(request: web.Request) -> web.Response:
    q = request.query
    filters = {name: q[name] for name in ("tenant", "key", "model") if q.get(name)}
    group_by = [g for g in q.get("group_by", "day").split(",") if g]
    bad = [g for g in group_by if g not in ("tenant", "key", "model", "day")]
    if bad:
        raise InvalidRequest(f"group_by accepts tenant, key, model, day; got {', '.join(bad)}")
    rows = await _state(request).store.usage(
        filters=filters, day_from=q.get("from"), day_to=q.get("to"), group_by=group_by)
    for row in rows:
        row["cost_usd"] = nano_to_usd(int(row.pop("cost_nusd") or 0))
    return _json({"data": rows})


async def pricing(request: web.Request) -> web.Response:
    return _json({"data": _state(request).admission.catalogue.as_dict()})


async def openapi(request: web.Request) -> web.Response:
    from admin.openapi import document

    return _json(document())


def create_admin_app() -> web.Application:
    app = web.Application(middlewares=[admin_auth])
    r = app.router
    r.add_get("/openapi.json", openapi)
    r.add_get("/tenants", list_tenants)
    r.add_post("/tenants", create_tenant)
    r.add_get("/tenants/{tenant}", get_tenant)
    r.add_put("/tenants/{tenant}/limits", set_tenant_limits)
    r.add_get("/tenants/{tenant}/keys", list_keys)
    r.add_post("/tenants/{tenant}/keys", create_key)
    r.add_get("/tenants/{tenant}/budget", tenant_budget)
    r.add_get("/keys/{key}", get_key)
    r.add_post("/keys/{key}/rotate", rotate_key)
    r.add_post("/keys/{key}/revoke", revoke_key)
    r.add_put("/keys/{key}/limits", set_key_limits)
    r.add_get("/keys/{key}/budget", key_budget)
    r.add_get("/usage", usage)
    r.add_get("/pricing", pricing)
    return app
