"""Configuration: YAML parsed once into frozen dataclasses. The bottom layer; imports nothing
from the project."""

from configs.errors import ConfigError
from configs.loader import load, load_text
from configs.schema import (
    BackendConfig,
    Deployment,
    GatewayConfig,
    MockSpec,
    ModelConfig,
    Price,
    ServerConfig,
    Timeouts,
)

__all__ = [
    "BackendConfig",
    "ConfigError",
    "Deployment",
    "GatewayConfig",
    "MockSpec",
    "ModelConfig",
    "Price",
    "ServerConfig",
    "Timeouts",
    "load",
    "load_text",
]
