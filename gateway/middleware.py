"""Middleware factories. app.py composes them in one ordered list.

- ``make_envelope``: outermost. Request id (accepted from ``x-request-id`` or generated) and the
  one place where any exception becomes an OpenAI-style error response (errors.to_http).
- auth: deny by default; only PUBLIC_ROUTES skip it. Runs inside the envelope
  (``make_envelope(app)``) only when an authenticator other than the open one is
  configured, so the demo pays nothing for it; ``make_auth`` is the same step as its own layer.
"""

from __future__ import annotations

import itertools
import logging
import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import (
    AuthenticationError,
    GatewayError,
    HttpError,
    NotFound,
    PayloadTooLarge,
    error_body,
    to_http,
)
from gateway.interfaces import ANONYMOUS, Principal
from gateway.keys import AUTHENTICATOR

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
PUBLIC_ROUTES = frozenset({"/health", "/ready"})
ADMIN_PREFIX = "/admin/"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
log = logging.getLogger("turnout.gateway")


class RequestIds:
    """Request ids without a syscall per request: a random per-process prefix (so workers and
    restarts never collide) followed by a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():012x}"


new_request_id = RequestIds()


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request.get(PRINCIPAL, ANONYMOUS)
    return principal


def _from_aiohttp(exc: web.HTTPException) -> HttpError:
    if exc.status == 413:
        return to_http(PayloadTooLarge(f"request body too large: {exc.text}"))
    if exc.status == 404:
        return to_http(NotFound("unknown URL; see /v1/models, /v1/chat/completions, /v1/completions, "
                                "/v1/embeddings", code="unknown_url"))
    error_type = "invalid_request_error" if exc.status < 500 else "api_error"
    return HttpError(exc.status, error_body(exc.reason, error_type), {})


def error_response(http: HttpError, request_id: str) -> web.Response:
    return web.Response(status=http.status, body=http.body, content_type="application/json",
                        headers={**http.headers, "x-request-id": request_id})


def make_envelope(auth: web.Application | None = None) -> Middleware:
    """With ``auth`` (the application whose AUTHENTICATOR decides, read per request: it is set
    at startup), the auth step runs inside the envelope (what ``make_auth`` does as a layer of
    its own): one middleware layer less per request when an authenticator is on."""

    @web.middleware
    async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("x-request-id")
        if rid is None or not _VALID_ID.match(rid):
            rid = new_request_id()
        request[REQUEST_ID] = rid
        try:
            if auth is not None and not _authenticated_now(request, auth):
                await _authenticate(request)
            resp = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(_from_aiohttp(exc), rid)
        except GatewayError as exc:
            return error_response(to_http(exc), rid)
        except Exception as exc:
            http = to_http(exc)
            if http.status == 500:
                log.exception("unhandled error in %s %s (request %s)", request.method, request.path, rid)
            return error_response(http, rid)
        if not resp.prepared:
            resp.headers["x-request-id"] = rid
        return resp

    return envelope


def _authenticated_now(request: web.Request, app: web.Application) -> bool:
    """Deny by default: every route but PUBLIC_ROUTES needs a principal (the admin sub-app
    authenticates with its own admin key). True when that is settled without I/O (a public
    route, or the authenticator knows the caller at once); False: await ``_authenticate``."""
    path = request.path
    if path in PUBLIC_ROUTES or path.startswith(ADMIN_PREFIX):
        return True
    principal = app[AUTHENTICATOR].authenticate_now(request)
    if principal is None:
        return False
    request[PRINCIPAL] = principal
    return True


async def _authenticate(request: web.Request) -> None:
    principal = await request.app[AUTHENTICATOR].authenticate(request)
    if principal is None:
        raise AuthenticationError("missing or invalid API key")
    request[PRINCIPAL] = principal


def make_auth() -> Middleware:
    """Auth as a separate layer, for apps composed by hand (create_app folds it into the envelope)."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _authenticated_now(request, request.app):
            await _authenticate(request)
        return await handler(request)

    return auth
