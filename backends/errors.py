"""Errors raised by backends. The gateway maps them to HTTP statuses in one place
(gateway/errors.py); routing classifies them for retries and fallbacks.

    BackendError
    ├── BackendTimeout (also TimeoutError)   phase: connect | first_token | idle | total
    ├── BackendUnavailable                   refused, reset, DNS: nothing usable came back
    ├── BackendProtocolError                 the upstream answered something we cannot parse
    └── BackendHTTPError                     the upstream answered with an error status
"""

from __future__ import annotations

from typing import Literal

TimeoutPhase = Literal["connect", "first_token", "idle", "total", "deadline"]


class BackendError(Exception):
    def __init__(self, backend: str, message: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.message = message


class BackendTimeout(BackendError, TimeoutError):
    def __init__(self, backend: str, phase: TimeoutPhase, seconds: float) -> None:
        super().__init__(backend, f"backend {backend} timed out ({phase} after {seconds:g}s)")
        self.phase = phase
        self.seconds = seconds


class BackendUnavailable(BackendError):
    pass


class BackendProtocolError(BackendError):
    pass


class BackendHTTPError(BackendError):
    """The upstream's own error. ``code``/``error_type``/``param`` come from its OpenAI-style body
    when it has one, so a client sees the upstream's words."""

    def __init__(
        self, backend: str, status: int, message: str, *, error_type: str | None = None,
        code: str | None = None, param: str | None = None, retry_after: float | None = None,
    ) -> None:
        super().__init__(backend, message)
        self.status = status
        self.error_type = error_type
        self.code = code
        self.param = param
        self.retry_after = retry_after

    @property
    def is_context_length(self) -> bool:
        text = f"{self.code or ''} {self.message}".lower()
        return self.status == 400 and (
            "context_length" in text or "context length" in text or "maximum context" in text
            or "too many tokens" in text
        )

    @property
    def is_content_filter(self) -> bool:
        text = f"{self.code or ''} {self.message}".lower()
        return self.status == 400 and ("content_filter" in text or "content policy" in text)
