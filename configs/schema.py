"""Frozen runtime configuration.

``loader.load()`` is the only producer of these objects. They are immutable so a reload can
swap a whole ``GatewayConfig`` atomically while in-flight requests keep the one they started
with. Invariants that do not need the YAML context are checked in ``__post_init__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from configs.admin import AdminConfig
from configs.cache import CacheConfig
from configs.observability import ObservabilityConfig
from configs.resilience import ResilienceConfig

BackendKind = Literal["openai", "vllm", "tgi", "ollama", "litellm", "mock"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("openai", "vllm", "tgi", "ollama", "litellm", "mock")
ModelType = Literal["chat", "embedding"]
MODEL_TYPES: tuple[ModelType, ...] = ("chat", "embedding")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    body_limit: int = 4 * 1024 * 1024
    grace_period: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-backend limits in seconds. ``first_token`` bounds the wait for the first chunk of a
    stream and ``idle`` the gap between chunks. A non-streaming call is bounded by ``connect``
    and ``total`` only: its headers arrive after the whole generation, so a first-token limit
    there would cut long answers short."""

    connect: float = 5.0
    first_token: float = 60.0
    idle: float = 60.0
    total: float = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_token", "idle", "total"):
            if getattr(self, name) <= 0:
                raise ValueError(f"timeout {name} must be positive")


@dataclass(frozen=True, slots=True)
class MockSpec:
    """Behaviour of the built-in simulator (kind: mock). Failure modes fire with ``fail_rate``."""

    first_token_ms: float = 0.0
    tokens_per_s: float = 0.0  # 0 means every token at once
    output_tokens: int = 16
    fail_mode: str | None = None
    fail_rate: float = 0.0
    embedding_dim: int = 384
    context_window: int = 8192


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    kind: BackendKind
    url: str | None = None
    model: str | None = None
    api_key: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = 256
    headers: Mapping[str, str] = field(default_factory=dict)
    mock: MockSpec | None = None
    tgi_messages_api: bool = False


@dataclass(frozen=True, slots=True)
class Deployment:
    backend: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    deployments: tuple[Deployment, ...]
    type: ModelType = "chat"
    balance: str = "round_robin"
    retries: int = 1
    fallbacks: tuple[str, ...] = ()
    price: Price | None = None
    context_window: int | None = None
    owned_by: str = "turnout"
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)

    def __post_init__(self) -> None:
        if not self.deployments:
            raise ValueError(f"model {self.name} has no deployments")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    source: str
    server: ServerConfig
    backends: Mapping[str, BackendConfig]
    models: Mapping[str, ModelConfig]
    redis_url: str | None = None
    log_level: str = "info"
    cache: CacheConfig | None = None
    admin: AdminConfig | None = None
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
