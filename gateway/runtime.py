"""Everything built from one config: backends, routers, cluster state, executor, and the
runtime's background tasks (active health probes, vLLM load polling).

A reload builds a whole new ``Runtime`` and swaps it into the ``RuntimeHolder``; requests read
``holder.current`` once when they start and keep that runtime to the end, so a reload never
changes a request half-way. The old runtime's tasks stop and its backends are closed after the
grace period. The shared ``ClientSession`` belongs to the app, not to a runtime.

Background tasks belong to the runtime (not the app's TaskTracker, which shutdown drains): they
start when the runtime is built inside a running loop and are cancelled by ``aclose``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from backends.base import Backend
from backends.errors import BackendHTTPError, BackendTimeout
from backends.registry import build_backend, supports_embeddings
from configs.resilience import BreakerPolicy, LoadPolicy, OutlierPolicy
from configs.schema import GatewayConfig
from routing import (
    BreakerState,
    ClusterState,
    ErrorClass,
    Executor,
    Router,
    build_router,
    is_deployment_fault,
)
from routing.health import probe_loop
from routing.load import metrics_url, poll_loop

log = logging.getLogger("turnout.runtime")
_POLLED_KINDS = ("vllm", "openai")


def classify_error(exc: BaseException) -> ErrorClass:
    """Backend errors → the classes that retries, breakers and fallback chains are written in."""
    if isinstance(exc, BackendTimeout):
        return "deadline" if exc.phase == "deadline" else "timeout"
    if isinstance(exc, BackendHTTPError):
        if exc.status == 429:
            return "rate_limit"
        if exc.is_context_length:
            return "context_length"
        if exc.is_content_filter:
            return "content_filter"
        if 400 <= exc.status < 500 and exc.status not in (408, 409):
            return "client"
    return "server"  # 5xx, resets, protocol errors, NoHealthyDeployment


def prefix_key(body: Mapping[str, Any], chars: int) -> str | None:
    """Affinity key of a prompt: the system prompt + first user message (chat), or the first
    ``chars`` characters of the prompt (completions); a short hash."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for m in messages:
            if isinstance(m, dict) and m.get("role") in ("system", "developer", "user"):
                parts.append(str(m.get("content"))[:chars])
                if m.get("role") == "user":
                    break
        text = "\x00".join(parts)
    else:
        prompt = body.get("prompt")
        text = (prompt if isinstance(prompt, str) else str(prompt))[:chars] if prompt is not None else ""
    if not text:
        return None
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).hexdigest()


@dataclass(slots=True)
class Runtime:
    config: GatewayConfig
    backends: Mapping[str, Backend]
    routers: Mapping[str, Router]
    cluster: ClusterState
    executor: Executor
    session: aiohttp.ClientSession | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        """Start probes and load polling (idempotent; needs a running loop)."""
        if self.tasks:
            return
        loop = asyncio.get_running_loop()
        for name, model in self.config.models.items():
            if model.resilience.health is not None:
                names = tuple(d.backend for d in model.deployments)
                coro = probe_loop(names, self._check, model.resilience.health, self.cluster.probes)
                self.tasks.append(loop.create_task(coro, name=f"probe-{name}"))
        targets = self.load_targets()
        if targets and self.session is not None:
            policy = min((m.resilience.load for m in self.config.models.values() if m.balance == "load_aware"),
                         key=lambda p: p.interval, default=LoadPolicy())
            coro = poll_loop(targets, self._fetch, policy, self.cluster.loads)
            self.tasks.append(loop.create_task(coro, name="load-poll"))

    def load_targets(self) -> dict[str, str]:
        """Backends of load_aware models that have a vLLM-style /metrics."""
        out = {}
        for model in self.config.models.values():
            if model.balance != "load_aware":
                continue
            for dep in model.deployments:
                bcfg = self.config.backends[dep.backend]
                if bcfg.kind in _POLLED_KINDS and bcfg.url:
                    out[dep.backend] = metrics_url(bcfg.url)
        return out

    async def _check(self, name: str) -> bool:
        return (await self.backends[name].health()).ok

    async def _fetch(self, url: str) -> str:
        assert self.session is not None
        async with self.session.get(url) as resp:
            resp.raise_for_status()
            return await resp.text()

    def breaker_states(self) -> dict[str, BreakerState]:
        """Deployment → "closed" | "open" | "half_open" (for /metrics exporters)."""
        return self.cluster.breakers.states()

    def status(self) -> dict[str, Any]:
        budgets = {n: b.snapshot() for n, b in self.executor.retry_budgets.items()}
        hedges = {n: b.snapshot() for n, b in self.executor.hedge_budgets.items()}
        return {"config": self.config.source, "deployments": self.cluster.status(),
                "retry_budgets": budgets, "hedge_budgets": hedges}

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for backend in self.backends.values():
            try:
                await backend.aclose()
            except Exception:  # a failing close must not stop the others from closing
                log.exception("closing backend %s failed", backend.name)


def _policies(cfg: GatewayConfig) -> tuple[dict[str, BreakerPolicy], dict[str, OutlierPolicy | None]]:
    """Breakers and outlier detection are per backend; a backend shared by several models takes
    the strictest settings among them (fewest failures, shortest reset)."""
    breakers: dict[str, BreakerPolicy] = {}
    outliers: dict[str, OutlierPolicy | None] = {}
    for model in cfg.models.values():
        r = model.resilience
        for dep in model.deployments:
            old = breakers.get(dep.backend)
            breakers[dep.backend] = r.breaker if old is None else BreakerPolicy(
                min(old.failures, r.breaker.failures), min(old.reset, r.breaker.reset))
            if outliers.get(dep.backend) is None:
                outliers[dep.backend] = r.outlier
    return breakers, outliers


def build_runtime(cfg: GatewayConfig, session: aiohttp.ClientSession) -> Runtime:
    """Build and check everything; raises ValueError naming the model or backend at fault.
    Inside a running loop the background tasks start at once."""
    backends = {name: build_backend(bcfg, session) for name, bcfg in cfg.backends.items()}
    for model in cfg.models.values():
        if model.type == "embedding":
            for dep in model.deployments:
                if not supports_embeddings(backends[dep.backend]):
                    raise ValueError(
                        f"{cfg.source}: models.{model.name}: backend {dep.backend!r} "
                        f"(kind {cfg.backends[dep.backend].kind}) cannot serve embeddings",
                    )
    routers = {}
    for name, model in cfg.models.items():
        try:
            routers[name] = build_router(model.balance, model.resilience)
        except ValueError as exc:
            raise ValueError(f"{cfg.source}: models.{name}.balance: {exc}") from None
    breakers, outliers = _policies(cfg)
    stale = min((m.resilience.load.stale for m in cfg.models.values()), default=LoadPolicy().stale)
    cluster = ClusterState(backends, breakers=breakers, outliers=outliers, load=LoadPolicy(stale=stale),
                           is_failure=is_deployment_fault(classify_error))
    executor = Executor(cfg.models, routers, cluster, classify_error)
    runtime = Runtime(cfg, backends, routers, cluster, executor, session)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return runtime
    runtime.start()
    return runtime


class RuntimeHolder:
    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
        self.generation = 1

    def swap(self, runtime: Runtime) -> Runtime:
        old, self.current = self.current, runtime
        self.generation += 1
        return old
