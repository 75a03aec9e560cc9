"""The OpenAPI 3.1 document for the public (OpenAI-compatible) API and the admin API, served at
``/admin/v1/openapi.json``. Written by hand from the route tables (gateway/handlers.py,
admin/api.py); tests check that every registered route is documented."""

from __future__ import annotations

from typing import Any

_OBJ: dict[str, Any] = {"type": "object", "additionalProperties": True}
_ERROR = {"description": "OpenAI-style error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
    "Limits": {"type": "object", "additionalProperties": False, "properties": {
        "models": {"type": ["array", "null"], "items": {"type": "string"}},
        "rpm": {"type": ["integer", "null"], "minimum": 0},
        "tpm": {"type": ["integer", "null"], "minimum": 0},
        "concurrency": {"type": ["integer", "null"], "minimum": 0},
        "budget_usd": {"type": ["number", "null"], "minimum": 0},
        "budget_period": {"enum": ["day", "month"]},
        "soft_alert": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}},
    "Tenant": {"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "limits": {"$ref": "#/components/schemas/Limits"}, "created_at": {"type": "number"}}},
    "ApiKey": {"type": "object", "properties": {
        "id": {"type": "string", "description": "public prefix"}, "tenant_id": {"type": "string"},
        "name": {"type": "string"}, "limits": {"$ref": "#/components/schemas/Limits"},
        "created_at": {"type": "number"}, "expires_at": {"type": ["number", "null"]},
        "revoked_at": {"type": ["number", "null"]}, "replaced_by": {"type": ["string", "null"]}}},
    "NewApiKey": {"allOf": [{"$ref": "#/components/schemas/ApiKey"}, {"type": "object", "properties": {
        "key": {"type": "string", "description": "the secret, shown only in this response"}}}]},
}


def _op(summary: str, *, body: str | None = None, ok: str | None = None, status: str = "200",
        params: tuple[str, ...] = (), query: tuple[str, ...] = (), security: str = "apiKey") -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ok}"} if ok else _OBJ
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {status: {"description": "OK", "content": {"application/json": {"schema": schema}}},
                      "4XX": _ERROR},
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                       for p in params]
        + [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in query],
    }
    if body is not None:
        ref = {"$ref": f"#/components/schemas/{body}"} if body in _SCHEMAS else _OBJ
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    op["security"] = [] if security == "none" else [{security: []}]
    return op


def _public() -> dict[str, Any]:
    return {
        "/v1/chat/completions": {"post": _op("Chat completion (JSON or SSE stream)", body="chat")},
        "/v1/completions": {"post": _op("Text completion (JSON or SSE stream)", body="completion")},
        "/v1/embeddings": {"post": _op("Embeddings", body="embedding")},
        "/v1/models": {"get": _op("List models")},
        "/v1/models/{model}": {"get": _op("One model", params=("model",))},
        "/v1/turnout/status": {"get": _op("Gateway status: breaker states per deployment, budgets")},
        "/health": {"get": _op("Liveness", security="none")},
        "/ready": {"get": _op("Readiness", security="none")},
    }


def _admin() -> dict[str, Any]:
    a, t, k = "/admin/v1", ("tenant",), ("key",)
    return {
        f"{a}/openapi.json": {"get": _op("This document", security="none")},
        f"{a}/tenants": {"get": _op("List tenants", security="adminKey"),
                         "post": _op("Create a tenant", body="Tenant", ok="Tenant", status="201",
                                     security="adminKey")},
        f"{a}/tenants/{{tenant}}": {"get": _op("One tenant", ok="Tenant", params=t, security="adminKey")},
        f"{a}/tenants/{{tenant}}/limits": {"put": _op("Replace a tenant's limits ({limits: Limits})",
                                                      body="limits", ok="Tenant", params=t,
                                                      security="adminKey")},
        f"{a}/tenants/{{tenant}}/keys": {
            "get": _op("List a tenant's keys (never the secrets)", params=t, security="adminKey"),
            "post": _op("Create a key ({name, limits, expires_in})", body="key", ok="NewApiKey",
                        status="201", params=t, security="adminKey")},
        f"{a}/tenants/{{tenant}}/budget": {"get": _op("Budget state this period", params=t,
                                                      security="adminKey")},
        f"{a}/keys/{{key}}": {"get": _op("One key", ok="ApiKey", params=k, security="adminKey")},
        f"{a}/keys/{{key}}/rotate": {"post": _op("Rotate ({grace_s}); the old key works for the grace",
                                                 body="rotate", ok="NewApiKey", status="201", params=k,
                                                 security="adminKey")},
        f"{a}/keys/{{key}}/revoke": {"post": _op("Revoke now, on every replica", ok="ApiKey", params=k,
                                                 security="adminKey")},
        f"{a}/keys/{{key}}/limits": {"put": _op("Replace a key's limits", body="limits", ok="ApiKey",
                                                params=k, security="adminKey")},
        f"{a}/keys/{{key}}/budget": {"get": _op("Budget state this period", params=k, security="adminKey")},
        f"{a}/usage": {"get": _op("Usage totals", query=("tenant", "key", "model", "from", "to", "group_by"),
                                  security="adminKey")},
        f"{a}/pricing": {"get": _op("The price catalogue in use", security="adminKey")},
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Turnout", "version": "1",
                 "description": "OpenAI-compatible gateway API and the admin API."},
        "paths": {**_public(), **_admin()},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "a tenant API key (tk-...)"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "admin.admin_key"},
            },
        },
    }
