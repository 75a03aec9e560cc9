"""The one mapping from errors to HTTP statuses and OpenAI error bodies."""

from __future__ import annotations

import orjson
import pytest

from backends.errors import BackendHTTPError, BackendProtocolError, BackendTimeout, BackendUnavailable
from gateway.errors import BudgetExceeded, InvalidRequest, ModelNotFound, RateLimited, to_http
from routing.errors import AllAttemptsFailed, NoHealthyDeployment


@pytest.mark.parametrize(("exc", "status", "code"), [
    (InvalidRequest("bad", param="x"), 400, None),
    (ModelNotFound("no"), 404, "model_not_found"),
    (NoHealthyDeployment("m"), 503, "no_healthy_deployment"),
    (BackendTimeout("b", "first_token", 1.0), 504, "upstream_timeout"),
    (BackendUnavailable("b", "refused"), 502, "upstream_unavailable"),
    (BackendProtocolError("b", "junk"), 502, "upstream_protocol_error"),
    (BackendHTTPError("b", 500, "boom"), 502, "upstream_error"),
    (BackendHTTPError("b", 400, "too long", code="context_length_exceeded"), 400, "context_length_exceeded"),
    (BudgetExceeded("spent"), 429, "insufficient_quota"),
    (ValueError("bug"), 500, "internal_error"),
])
def test_status_and_shape(exc: Exception, status: int, code: str | None) -> None:
    http = to_http(exc)
    body = orjson.loads(http.body)
    assert http.status == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code


def test_internal_errors_do_not_leak_details() -> None:
    assert b"secret" not in to_http(ValueError("secret path /etc")).body


def test_rate_limit_headers() -> None:
    http = to_http(RateLimited("slow down", retry_after=2.4, headers={"x-ratelimit-remaining-requests": "0"}))
    assert http.headers == {"x-ratelimit-remaining-requests": "0", "Retry-After": "2"}


def test_all_failed_prefers_client_errors_then_timeouts() -> None:
    errors: list[BaseException] = [BackendUnavailable("a", "x"), BackendTimeout("b", "total", 1.0)]
    assert to_http(AllAttemptsFailed("m", errors)).status == 504
    errors.append(BackendHTTPError("c", 400, "bad"))
    assert to_http(AllAttemptsFailed("m", errors)).status == 400
    assert to_http(AllAttemptsFailed("m", [NoHealthyDeployment("m")])).status == 503
    assert to_http(AllAttemptsFailed("m", [])).status == 503


def test_request_ids_are_unique_and_per_process_prefixed() -> None:
    from gateway.middleware import RequestIds

    a, b = RequestIds(), RequestIds()
    ids = {a() for _ in range(1000)}
    assert len(ids) == 1000
    assert a()[:12] != b()[:12]
