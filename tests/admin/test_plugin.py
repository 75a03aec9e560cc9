"""The admin layer inside the real gateway app (aiohttp test server on loopback, mock backend):
auth, 401/403/429, budgets, metering, the admin API and the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from configs import load_text
from gateway.app import create_app
from gateway.server import reload
from tests.admin.conftest import PG_URL, drop_schema

ADMIN = {"Authorization": "Bearer admin-secret"}

CONFIG = """
backends:
  sim: {{kind: mock, model: mock-small, output_tokens: 10}}
models:
  small:
    deployments: [sim]
    price: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}  # 1 USD per token
  free: {{deployments: [sim]}}
{redis}
admin:
  database: "{database}"
  {schema}
  admin_key: admin-secret
  redis_prefix: "{prefix}"
  usage: {{flush_interval: 50ms, spill_dir: "{spill}"}}
"""

Client = TestClient[Any, Any]


def gateway_config(tmp_path: Path, backend: str, prefix: str, schema: str, redis: bool = False) -> str:
    database = f"sqlite:///{tmp_path}/admin.db" if backend == "sqlite" else PG_URL
    return CONFIG.format(
        database=database, schema=f"schema: {schema}" if backend == "postgres" else "",
        prefix=prefix, spill=tmp_path / "spill",
        redis='redis: {url: "redis://127.0.0.1:6379/0"}' if redis else "",
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def client(
    request: pytest.FixtureRequest, aiohttp_client: Callable[..., Any], tmp_path: Path, redis_prefix: str,
    pg_schema: str,
) -> AsyncIterator[Client]:
    cfg = load_text(gateway_config(tmp_path, request.param, redis_prefix, pg_schema,
                                   redis=request.param == "postgres"))
    client: Client = await aiohttp_client(create_app(cfg))
    yield client
    # Close the app before dropping its schema: its cleanup writes the last usage batch, and a
    # DROP SCHEMA racing that write deadlocked once (aiohttp_client's own teardown runs later).
    await client.close()
    if request.param == "postgres":
        await drop_schema(pg_schema)


async def new_key(client: Client, tenant: str, limits: dict[str, Any] | None = None,
                  key_limits: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await client.post("/admin/v1/tenants", json={"id": tenant, "limits": limits or {}}, headers=ADMIN)
    assert resp.status in (201, 409), await resp.text()
    resp = await client.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "t", "limits": key_limits},
                             headers=ADMIN)
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


def chat(model: str = "small", max_tokens: int = 10) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


async def test_auth_is_on_and_keys_work(client: Client) -> None:
    assert (await client.post("/v1/chat/completions", json=chat())).status == 401
    resp = await client.post("/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer tk-nope"})
    body = await resp.json()
    assert resp.status == 401 and body["error"]["type"] == "authentication_error"
    assert (await client.get("/health")).status == 200
    key = await new_key(client, "acme")
    resp = await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
    assert resp.status == 200, await resp.text()
    forged = key["key"][:-1] + ("B" if key["key"].endswith("A") else "A")
    assert (await client.post("/v1/chat/completions", json=chat(),
                              headers={"Authorization": f"Bearer {forged}"})).status == 401


async def test_forbidden_model_is_403(client: Client) -> None:
    key = await new_key(client, "acme", key_limits={"models": ["free"]})
    resp = await client.post("/v1/chat/completions", json=chat("small"), headers=bearer(key))
    assert resp.status == 403
    assert (await client.post("/v1/chat/completions", json=chat("free"), headers=bearer(key))).status == 200


async def test_rate_limit_answers_429_with_headers(client: Client) -> None:
    key = await new_key(client, "acme", key_limits={"rpm": 2})
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=chat("free"), headers=bearer(key))).status == 200
    resp = await client.post("/v1/chat/completions", json=chat("free"), headers=bearer(key))
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.headers["x-ratelimit-limit-requests"] == "2"
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in resp.headers
    assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"


async def test_budget_stops_and_usage_is_metered(client: Client) -> None:
    # each request reserves (prompt + 10) USD and really costs prompt + 10 (mock output 10 tokens)
    key = await new_key(client, "acme", limits={"budget_usd": 60, "budget_period": "day"})
    statuses = [(await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status
                for _ in range(5)]
    assert statuses.count(200) >= 2 and statuses[-1] == 429
    resp = await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
    assert (await resp.json())["error"]["type"] == "insufficient_quota"
    budget = await (await client.get("/admin/v1/tenants/acme/budget", headers=ADMIN)).json()
    assert budget["spent_usd"] <= 60 and budget["reserved_usd"] == 0
    assert budget["alert"] == (budget["spent_usd"] >= 48)
    await asyncio.sleep(0.3)  # one flush interval
    usage = await (await client.get("/admin/v1/usage?tenant=acme&group_by=model", headers=ADMIN)).json()
    row = usage["data"][0]
    assert row["model"] == "small" and row["requests"] == statuses.count(200)
    assert row["cost_usd"] == pytest.approx(budget["spent_usd"])


async def test_revoke_and_rotate(client: Client) -> None:
    key = await new_key(client, "acme")
    assert (await client.post("/v1/chat/completions", json=chat("free"), headers=bearer(key))).status == 200
    resp = await client.post(f"/admin/v1/keys/{key['id']}/rotate", json={"grace_s": 60}, headers=ADMIN)
    new = await resp.json()
    for k in (key, new):  # the old key works during the grace period
        assert (await client.post("/v1/chat/completions", json=chat("free"), headers=bearer(k))).status == 200
    assert (await client.post(f"/admin/v1/keys/{key['id']}/revoke", headers=ADMIN)).status == 200
    assert (await client.post("/v1/chat/completions", json=chat("free"), headers=bearer(key))).status == 401
    keys = await (await client.get("/admin/v1/tenants/acme/keys", headers=ADMIN)).json()
    assert {k["id"] for k in keys["data"]} == {key["id"], new["id"]}
    assert all("key" not in k and "hash" not in k for k in keys["data"])


async def test_admin_api_needs_the_admin_key(client: Client) -> None:
    assert (await client.get("/admin/v1/tenants")).status == 401
    assert (await client.get("/admin/v1/tenants", headers={"Authorization": "Bearer wrong"})).status == 401
    resp = await client.post("/admin/v1/tenants", json={"id": "x", "limits": {"rpm": -1}}, headers=ADMIN)
    assert resp.status == 400
    resp = await client.post("/admin/v1/tenants", json={"id": "x", "limits": {"bogus": 1}}, headers=ADMIN)
    assert resp.status == 400 and "bogus" in (await resp.json())["error"]["message"]
    assert (await client.get("/admin/v1/tenants/nope", headers=ADMIN)).status == 404


async def test_openapi_documents_every_route(client: Client) -> None:
    doc = await (await client.get("/admin/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    seen = set()
    for route in client.app.router.routes():  # sub-app routes are listed with their prefix
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method in ("HEAD", "*") or path is None:
            continue
        seen.add((path.replace("{model:.+}", "{model}"), route.method))
    admin_routes = {r for r in seen if r[0].startswith("/admin/")}
    assert admin_routes == {r for r in documented if r[0].startswith("/admin/")}
    assert {r for r in documented if not r[0].startswith("/admin/")} <= seen  # public ones exist


async def test_budget_use_is_exported_to_metrics(client: Client) -> None:
    from admin.api import ADMIN_STATE
    from admin.budget_export import export_budgets
    from gateway.observe import RECORDER

    key = await new_key(client, "acme", limits={"budget_usd": 60, "budget_period": "day"})
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    app = client.app
    assert app is not None
    recorder = app[RECORDER]
    seen: dict[str, float] = {}

    def set_ratio(tenant: str, ratio: float) -> None:
        seen[tenant] = ratio
        recorder.families.budget_used.labels(tenant=recorder.tenant_label(tenant)).set(ratio)

    for _ in range(100):  # with Redis a settle may wait up to 5 ms to share a round trip
        assert await export_budgets(app[ADMIN_STATE], set_ratio) == 1
        if seen["acme"] > 0:
            break
        await asyncio.sleep(0.01)
    budget = await (await client.get("/admin/v1/tenants/acme/budget", headers=ADMIN)).json()
    assert seen["acme"] == pytest.approx(budget["spent_usd"] / 60) and seen["acme"] > 0
    text = await (await client.get("/metrics")).text()
    assert 'turnout_budget_used_ratio{tenant="acme"}' in text


async def test_a_reload_reprices_new_requests(
    aiohttp_client: Callable[..., Any], tmp_path: Path, redis_prefix: str,
) -> None:
    # a short grace: the old runtime closes after it (a task the app drains at cleanup)
    text = "server: {grace_period: 10ms}\n" + gateway_config(tmp_path, "sqlite", redis_prefix, "")
    client: Client = await aiohttp_client(create_app(load_text(text)))
    key = await new_key(client, "acme", limits={"budget_usd": 1000, "budget_period": "day"})

    async def spent() -> float:
        budget = await (await client.get("/admin/v1/tenants/acme/budget", headers=ADMIN)).json()
        return float(budget["spent_usd"])

    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    first = await spent()  # 1 USD per token
    path = tmp_path / "reloaded.yaml"
    path.write_text(text.replace(
        "price: {input_per_mtok: 1000000, output_per_mtok: 1000000}",
        "price: {input_per_mtok: 2000000, output_per_mtok: 2000000}"))
    assert await reload(client.app, str(path))
    prices = await (await client.get("/admin/v1/pricing", headers=ADMIN)).json()
    assert prices["data"]["small"]["input_per_mtok"] == 2_000_000
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    assert await spent() - first == pytest.approx(2 * first)  # the same request at twice the price
