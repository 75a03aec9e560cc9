"""Everything built from one config: backends, routers, executor.

A reload builds a whole new ``Runtime`` and swaps it into the ``RuntimeHolder``; requests read
``holder.current`` once when they start and keep that runtime to the end, so a reload never
changes a request half-way. The old runtime's backends are closed after the grace period.
The shared ``ClientSession`` belongs to the app, not to a runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from backends.base import Backend
from backends.errors import BackendHTTPError, BackendTimeout
from backends.registry import build_backend, supports_embeddings
from configs.schema import GatewayConfig
from routing import ClusterState, ErrorClass, Executor, Router, build_router

log = logging.getLogger("turnout.runtime")


def classify_error(exc: BaseException) -> ErrorClass:
    """Backend errors → the classes that retries and fallback chains are written in."""
    if isinstance(exc, BackendTimeout):
        return "timeout"
    if isinstance(exc, BackendHTTPError):
        if exc.status == 429:
            return "rate_limit"
        if exc.is_context_length:
            return "context_length"
        if exc.is_content_filter:
            return "content_filter"
        if 400 <= exc.status < 500 and exc.status not in (408, 409):
            return "client"
    return "server"


@dataclass(slots=True)
class Runtime:
    config: GatewayConfig
    backends: Mapping[str, Backend]
    routers: Mapping[str, Router]
    cluster: ClusterState
    executor: Executor

    async def aclose(self) -> None:
        for backend in self.backends.values():
            try:
                await backend.aclose()
            except Exception:  # a failing close must not stop the others from closing
                log.exception("closing backend %s failed", backend.name)


def build_runtime(cfg: GatewayConfig, session: aiohttp.ClientSession) -> Runtime:
    """Build and check everything; raises ValueError naming the model or backend at fault."""
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
            routers[name] = build_router(model.balance)
        except ValueError as exc:
            raise ValueError(f"{cfg.source}: models.{name}.balance: {exc}") from None
    cluster = ClusterState(backends)
    executor = Executor(cfg.models, routers, cluster, classify_error)
    return Runtime(cfg, backends, routers, cluster, executor)


class RuntimeHolder:
    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
        self.generation = 1

    def swap(self, runtime: Runtime) -> Runtime:
        old, self.current = self.current, runtime
        self.generation += 1
        return old
