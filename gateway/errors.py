"""The gateway's error tree and the one place that maps errors to HTTP.

    GatewayError                          status  type
    ├── InvalidRequest                      400   invalid_request_error   (param names the field)
    │   └── MalformedJSON                   400   invalid_request_error
    ├── AuthenticationError                 401   authentication_error
    ├── PermissionDenied                    403   permission_error
    ├── ModelNotFound                       404   invalid_request_error   code model_not_found
    ├── NotFound                            404   invalid_request_error
    ├── PayloadTooLarge                     413   invalid_request_error
    ├── RateLimited                         429   rate_limit_exceeded     (Retry-After, x-ratelimit-*)
    │   └── BudgetExceeded                  429   insufficient_quota
    └── NoHealthyDeployment                 503   service_unavailable

Lower packages raise their own errors; ``to_http`` maps those too:
    backends.BackendTimeout     → 504    backends.BackendUnavailable → 502
    backends.BackendProtocolError → 502  backends.BackendHTTPError → the upstream's status and words
    routing.AllAttemptsFailed   → mapped from its most telling error (see ``_pick``)
Handlers never build error JSON themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from backends.errors import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
)
from routing.errors import AllAttemptsFailed, NoHealthyDeployment


class GatewayError(Exception):
    status = 500
    error_type = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class MalformedJSON(InvalidRequest):
    pass


class AuthenticationError(GatewayError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    error_type = "permission_error"


class ModelNotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    error_type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after: float | None = None,
        headers: Mapping[str, str] | None = None, code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class BudgetExceeded(RateLimited):
    error_type = "insufficient_quota"
    code = "insufficient_quota"


@dataclass(slots=True)
class HttpError:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The ``{"error": {...}}`` object for ``exc``, for SSE error events mid-stream."""
    http = to_http(exc)
    parsed: dict[str, Any] = orjson.loads(http.body)
    return parsed


def to_http(exc: BaseException) -> HttpError:
    if isinstance(exc, AllAttemptsFailed):
        return _from_all_failed(exc)
    if isinstance(exc, GatewayError):
        headers: dict[str, str] = {}
        if isinstance(exc, RateLimited):
            headers.update(exc.headers)
            if exc.retry_after is not None:
                headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return HttpError(exc.status, error_body(exc.message, exc.error_type, exc.param, exc.code), headers)
    if isinstance(exc, NoHealthyDeployment):
        return HttpError(503, error_body(str(exc), "service_unavailable", None, "no_healthy_deployment"))
    if isinstance(exc, BackendError):
        return _from_backend(exc)
    return HttpError(500, error_body("internal error", "api_error", None, "internal_error"))


def _from_backend(exc: BackendError) -> HttpError:
    if isinstance(exc, BackendTimeout):
        return HttpError(504, error_body(exc.message, "timeout", None, "upstream_timeout"))
    if isinstance(exc, BackendUnavailable):
        return HttpError(502, error_body(exc.message, "api_error", None, "upstream_unavailable"))
    if isinstance(exc, BackendProtocolError):
        return HttpError(502, error_body(exc.message, "api_error", None, "upstream_protocol_error"))
    if isinstance(exc, BackendHTTPError):
        return _from_upstream_status(exc)
    return HttpError(502, error_body(exc.message, "api_error", None, "upstream_error"))


def _from_upstream_status(exc: BackendHTTPError) -> HttpError:
    """An upstream 4xx passes through with its status and words; a 5xx becomes 502 so clients
    can tell the gateway's own failures from the upstream's."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if 400 <= exc.status < 500:
        fallback_type = "rate_limit_exceeded" if exc.status == 429 else "invalid_request_error"
        error_type = exc.error_type or fallback_type
        return HttpError(exc.status, error_body(exc.message, error_type, exc.param, exc.code), headers)
    return HttpError(502, error_body(
        f"upstream error {exc.status}: {exc.message}", "api_error", None, "upstream_error",
    ), headers)


def _pick(errors: list[BaseException]) -> BaseException:
    """The error that best explains a failed chain: a client-side 4xx from an upstream beats
    everything (retrying elsewhere would not help the client), then timeouts, then the last."""
    for exc in errors:
        if isinstance(exc, BackendHTTPError) and 400 <= exc.status < 500 and exc.status != 429:
            return exc
    for exc in errors:
        if isinstance(exc, BackendTimeout):
            return exc
    return errors[-1]


def _from_all_failed(exc: AllAttemptsFailed) -> HttpError:
    if not exc.errors:
        return HttpError(503, error_body(str(exc), "service_unavailable", None, "no_healthy_deployment"))
    chosen = _pick(exc.errors)
    if isinstance(chosen, NoHealthyDeployment):
        return HttpError(503, error_body(str(chosen), "service_unavailable", None, "no_healthy_deployment"))
    return to_http(chosen)
