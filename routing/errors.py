"""Errors raised by routing.

    RoutingError
    ├── NoHealthyDeployment   every candidate is ejected or its breaker is open
    │   └── BreakerOpen        one deployment's breaker refused a call
    └── AllAttemptsFailed     every attempt (retries and fallbacks included) failed; ``errors``
                              holds each attempt's error in order
"""

from __future__ import annotations


class RoutingError(Exception):
    pass


class NoHealthyDeployment(RoutingError):
    def __init__(self, model: str) -> None:
        super().__init__(f"no healthy deployment for model {model!r}")
        self.model = model


class AllAttemptsFailed(RoutingError):
    def __init__(self, model: str, errors: list[BaseException]) -> None:
        super().__init__(f"all {len(errors)} attempts for model {model!r} failed")
        self.model = model
        self.errors = errors


class BreakerOpen(NoHealthyDeployment):
    """The deployment's circuit breaker refused the call (open, or its one probe is running)."""

    def __init__(self, deployment: str) -> None:
        RoutingError.__init__(self, f"circuit breaker open for deployment {deployment!r}")
        self.model = deployment
        self.deployment = deployment
