"""The executor: runs the attempts a route describes.

For a request on model M with ``fallbacks: [F1, F2]`` the chain is M, F1, F2. For each model in
the chain the executor asks that model's router for a plan and makes up to ``1 + retries``
attempts over the plan's candidates (cycling). It moves to the next model in the chain when the
attempts are used up, or at once when the error class says a retry here cannot help (context
length: the fallback should be a larger model). A client error (4xx other than 429) stops
everything: no other deployment would answer differently.

``attempt(model, deployment)`` does the I/O and either returns a value or raises. For streams the
gateway's attempt returns once the first chunk has arrived, so failures before the first byte
are retried here and later ones are not (the executor is never involved after it returns).

Cancellation: if the caller is cancelled, the running attempt is cancelled with it and nothing
is retried.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from configs.schema import ModelConfig
from routing.base import RouteInput, Router
from routing.cluster import ClusterState
from routing.errors import AllAttemptsFailed, NoHealthyDeployment

T = TypeVar("T")
ErrorClass = Literal["timeout", "server", "rate_limit", "context_length", "content_filter", "client"]
Classifier = Callable[[BaseException], ErrorClass]
_STOP_CHAIN: frozenset[ErrorClass] = frozenset({"client"})
_SKIP_TO_FALLBACK: frozenset[ErrorClass] = frozenset({"context_length", "content_filter"})


@dataclass(slots=True)
class Execution(Generic[T]):
    value: T
    model: str
    deployment: str
    attempts: int
    fallback_used: bool
    errors: list[BaseException] = field(default_factory=list)


class Executor:
    def __init__(
        self, models: Mapping[str, ModelConfig], routers: Mapping[str, Router],
        cluster: ClusterState, classify: Classifier,
    ) -> None:
        self._models = models
        self._routers = routers
        self._cluster = cluster
        self._classify = classify

    def chain(self, model: str) -> list[str]:
        return [model, *self._models[model].fallbacks]

    async def run(
        self, model: str, attempt: Callable[[str, str], Awaitable[T]], *,
        session_key: str | None = None, prefix_key: str | None = None,
    ) -> Execution[T]:
        errors: list[BaseException] = []
        for index, name in enumerate(self.chain(model)):
            cfg = self._models[name]
            inp = RouteInput(
                name, tuple(d.backend for d in cfg.deployments), tuple(d.weight for d in cfg.deployments),
                session_key, prefix_key,
            )
            plan = self._routers[name].plan(inp, self._cluster.view(inp.deployments))
            if not plan.candidates:
                errors.append(NoHealthyDeployment(name))
                continue
            for n in range(1 + cfg.retries):
                deployment = plan.candidates[n % len(plan.candidates)]
                try:
                    value = await self._attempt(attempt, name, deployment)
                except Exception as exc:  # every attempt error is collected and classified
                    errors.append(exc)
                    kind = self._classify(exc)
                    if kind in _STOP_CHAIN:
                        raise AllAttemptsFailed(model, errors) from exc
                    if kind in _SKIP_TO_FALLBACK:
                        break
                    continue
                return Execution(value, name, deployment, len(errors) + 1, index > 0, errors)
        raise AllAttemptsFailed(model, errors)

    async def _attempt(self, attempt: Callable[[str, str], Awaitable[T]], model: str, deployment: str) -> T:
        stats = self._cluster.get(deployment)
        stats.in_flight += 1
        started = time.perf_counter()
        try:
            value = await attempt(model, deployment)
        except Exception:
            stats.failures += 1
            raise
        finally:
            stats.in_flight -= 1
        stats.successes += 1
        stats.observe_latency(time.perf_counter() - started)
        return value
