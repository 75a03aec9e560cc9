"""The executor: runs the attempts a route describes.

For model M the executor asks M's router for a plan and makes up to ``1 + retries`` attempts
over the plan's candidates (cycling, skipping deployments that became unavailable). Retries
wait a full-jitter exponential backoff, never past the client's deadline, and only while M's
retry budget allows (so retries cannot multiply an outage). When M is used up the chain goes
on to the next of M's fallback rules that matches the last error's class (``fallbacks:
[{model: big, on: [context_length]}]``; a plain name matches any class); context-length and
content-filter errors skip straight to that step. A client error (4xx other than 429) or the
client's deadline stops everything.

The first attempt may be hedged (``hedge`` in the model's config, two or more candidates):
see hedging.py. Every attempt runs under its deployment's circuit breaker and is recorded in
``ClusterState`` (in-flight, latency, outlier window).

``attempt(model, deployment)`` does the I/O and either returns a value or raises. For streams
the gateway's attempt returns once the first chunk has arrived, so failures before the first
byte are retried here and later ones are not. ``discard`` closes a value that lost a hedge race.

Cancellation: if the caller is cancelled, running attempts are cancelled and nothing is retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from configs.schema import ModelConfig
from routing.base import RouteInput, Router
from routing.cluster import ClusterState
from routing.errors import AllAttemptsFailed, NoHealthyDeployment
from routing.hedging import Discard, race
from routing.retry_budget import Budget, RetryBudget

T = TypeVar("T")
ErrorClass = Literal[
    "timeout", "server", "rate_limit", "context_length", "content_filter", "client", "deadline",
]
Classifier = Callable[[BaseException], ErrorClass]
Attempt = Callable[[str, str], Awaitable[T]]
_STOP_CHAIN: frozenset[ErrorClass] = frozenset({"client", "deadline"})
_SKIP_TO_FALLBACK: frozenset[ErrorClass] = frozenset({"context_length", "content_filter"})
NOT_DEPLOYMENT_FAULT: frozenset[ErrorClass] = frozenset({"client", "deadline", "context_length", "content_filter"})


@dataclass(slots=True)
class Execution(Generic[T]):
    value: T
    model: str
    deployment: str
    attempts: int
    fallback_used: bool
    errors: list[BaseException] = field(default_factory=list)
    hedge: str | None = None  # "won": the duplicate answered first; "lost": the primary did


@dataclass(slots=True)
class _Run(Generic[T]):
    """One request's progress through the chain."""

    attempt: Attempt[T]
    session_key: str | None
    prefix_key: str | None
    deadline: float | None
    discard: Discard | None
    errors: list[BaseException] = field(default_factory=list)
    attempts: int = 0


class Executor:
    def __init__(
        self, models: Mapping[str, ModelConfig], routers: Mapping[str, Router],
        cluster: ClusterState, classify: Classifier, rng: random.Random | None = None,
    ) -> None:
        self._models = models
        self._routers = routers
        self._cluster = cluster
        self._classify = classify
        self._deployments = {
            n: (tuple(d.backend for d in m.deployments), tuple(d.weight for d in m.deployments))
            for n, m in models.items()
        }
        self.retry_budgets = {n: RetryBudget(m.resilience.retry, rng=rng) for n, m in models.items()}
        self.hedge_budgets = {
            n: Budget(m.resilience.hedge.budget, 0, m.resilience.retry.window)
            for n, m in models.items() if m.resilience.hedge is not None
        }

    def chain(self, model: str) -> list[str]:
        return [model, *self._models[model].fallbacks]

    async def run(
        self, model: str, attempt: Attempt[T], *, session_key: str | None = None,
        prefix_key: str | None = None, deadline: float | None = None, discard: Discard | None = None,
    ) -> Execution[T]:
        run = _Run(attempt, session_key, prefix_key, deadline, discard)
        rules = self._models[model].resilience.fallbacks
        name, position = model, 0
        while True:
            outcome = await self._run_model(name, run, fallback=name != model)
            if isinstance(outcome, Execution):
                return outcome
            if outcome in _STOP_CHAIN:
                raise AllAttemptsFailed(model, run.errors) from (run.errors[-1] if run.errors else None)
            nxt = next((i for i in range(position, len(rules)) if rules[i].matches(outcome)), None)
            if nxt is None:
                raise AllAttemptsFailed(model, run.errors)
            name, position = rules[nxt].model, nxt + 1

    async def _run_model(self, name: str, run: _Run[T], *, fallback: bool) -> Execution[T] | ErrorClass:
        """Attempts on one model: an Execution, or the class of the error that ended them."""
        cfg = self._models[name]
        budget = self.retry_budgets[name]
        budget.request()
        deployments, weights = self._deployments[name]
        inp = RouteInput(name, deployments, weights, run.session_key, run.prefix_key)
        candidates = self._routers[name].plan(inp, self._cluster.view(inp.deployments)).candidates
        last: ErrorClass = "server"
        if not candidates:
            run.errors.append(NoHealthyDeployment(name))
            return last
        for n in range(1 + cfg.retries):
            if n > 0 and not await self._backoff(budget, n - 1, run.deadline):
                break
            deployment = self._pick(candidates, n)
            if deployment is None:
                run.errors.append(NoHealthyDeployment(name))
                break
            try:
                value, used, hedge = await self._first_or_retry(name, cfg, candidates, deployment, n, run)
            except Exception as exc:  # every attempt error is collected and classified
                run.errors.append(exc)
                last = self._classify(exc)
                if last in _STOP_CHAIN or last in _SKIP_TO_FALLBACK:
                    return last
                continue
            return Execution(value, name, used, run.attempts, fallback, run.errors, hedge)
        return last

    def _pick(self, candidates: tuple[str, ...], n: int) -> str | None:
        for i in range(len(candidates)):
            name = candidates[(n + i) % len(candidates)]
            if self._cluster.available(name):
                return name
        return None

    async def _backoff(self, budget: RetryBudget, retry: int, deadline: float | None) -> bool:
        if not budget.try_spend():
            return False
        delay = budget.backoff(retry)
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() + delay >= deadline:
            return False
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    async def _first_or_retry(
        self, name: str, cfg: ModelConfig, candidates: tuple[str, ...], deployment: str, n: int, run: _Run[T],
    ) -> tuple[T, str, str | None]:
        policy = cfg.resilience.hedge
        if n > 0 or policy is None:
            return await self._attempt(run, name, deployment), deployment, None
        others = [c for c in candidates if c != deployment and self._cluster.available(c)]
        if not others:
            return await self._attempt(run, name, deployment), deployment, None
        hedges = self.hedge_budgets[name]
        hedges.request()
        delay = policy.delay
        if delay is None:
            seen = self._cluster.get(deployment).quantile(policy.quantile, policy.min_samples)
            delay = policy.max_delay if seen is None else min(seen, policy.max_delay)
        second = others[0]
        result = await race(
            lambda: self._attempt(run, name, deployment), lambda: self._attempt(run, name, second),
            delay, hedges.try_spend, run.discard, run.errors.append,
        )
        if not result.hedged:
            return result.value, deployment, None
        return result.value, (second if result.winner else deployment), ("won" if result.winner else "lost")

    async def _attempt(self, run: _Run[T], model: str, deployment: str) -> T:
        stats = self._cluster.get(deployment)
        run.attempts += 1
        started = time.perf_counter()
        stats.in_flight += 1
        try:
            value = await self._cluster.breakers.run(deployment, lambda: run.attempt(model, deployment))
        except Exception as exc:
            stats.in_flight -= 1
            if not isinstance(exc, NoHealthyDeployment):
                self._cluster.record(deployment, exc, time.perf_counter() - started)
            raise
        except BaseException:  # cancelled: no fault of the deployment, but it took at least this long
            stats.in_flight -= 1
            self._cluster.record_unfinished(deployment, time.perf_counter() - started)
            raise
        stats.in_flight -= 1
        self._cluster.record(deployment, None, time.perf_counter() - started)
        return value


def is_deployment_fault(classify: Classifier) -> Callable[[BaseException], bool]:
    """The breaker/outlier predicate: errors that say something about the deployment."""
    def fault(exc: BaseException) -> bool:
        return isinstance(exc, Exception) and classify(exc) not in NOT_DEPLOYMENT_FAULT
    return fault

