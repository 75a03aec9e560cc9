"""YAML → validated, frozen ``GatewayConfig``.

This is the only module that reads the process environment (``${VAR}`` and
``${VAR:-default}`` interpolation in string values). Parsing is strict: unknown keys,
missing references and malformed values all raise ``ConfigError`` naming the file, the key
path and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from configs.admin import parse_admin
from configs.cache import parse_cache
from configs.errors import ConfigError
from configs.observability import parse_observability
from configs.reader import Reader
from configs.resilience import parse_resilience
from configs.schema import (
    BACKEND_KINDS,
    MODEL_TYPES,
    BackendConfig,
    Deployment,
    GatewayConfig,
    MockSpec,
    ModelConfig,
    Price,
    ServerConfig,
    Timeouts,
)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
BALANCE_STRATEGIES = (
    "round_robin", "weighted", "least_loaded", "latency", "load_aware", "prefix_affinity", "session",
)
MOCK_FAIL_MODES = (
    "http_500", "http_429", "timeout", "reset", "stream_cut", "malformed_chunk", "context_length",
)
_URL_KINDS = ("openai", "vllm", "tgi", "ollama")


def load(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read file: {exc.strerror}") from None
    return load_text(text, source, env)


def load_text(text: str, source: str = "<string>", env: Mapping[str, str] | None = None) -> GatewayConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from None
    data = _interpolate(data, "", source, os.environ if env is None else env)
    return _parse_root(Reader(data if data is not None else {}, "", source))


def _interpolate(value: Any, path: str, source: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(source, path, f"environment variable {name} is not set")
        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), source, env) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", source, env) for i, v in enumerate(value)]
    return value


def _parse_root(root: Reader) -> GatewayConfig:
    server = _parse_server(root.section("server"), root.source)
    backends = {name: _parse_backend(name, Reader(v, f"backends.{name}", root.source))
                for name, v in root.items("backends")}
    models = {name: _parse_model(name, Reader(v, f"models.{name}", root.source))
              for name, v in root.items("models")}
    redis = root.section("redis")
    redis_url = None
    if redis is not None:
        redis_url = redis.str("url")
        redis.finish()
    logging = root.section("logging")
    log_level = "info"
    if logging is not None:
        log_level = logging.choice("level", ("debug", "info", "warning", "error"), "info")
        logging.finish()
    cache = parse_cache(root.section("cache"))
    admin = parse_admin(root.section("admin"))
    observability = parse_observability(root.section("observability"))
    root.finish()
    _check_references(root.source, backends, models)
    return GatewayConfig(
        root.source, server, backends, models, redis_url, log_level, cache=cache, admin=admin,
        observability=observability,
    )


def _parse_server(r: Reader | None, source: str) -> ServerConfig:
    if r is None:
        return ServerConfig()
    server = ServerConfig(
        host=r.str("host", "127.0.0.1"),
        port=r.int("port", 8080, min_value=0),
        workers=r.int("workers", 1, min_value=1),
        body_limit=r.size("body_limit", 4 * 1024 * 1024),
        grace_period=r.duration("grace_period", 30.0),
    )
    r.finish()
    return server


def _parse_timeouts(r: Reader | None) -> Timeouts:
    if r is None:
        return Timeouts()
    t = Timeouts(
        connect=r.duration("connect", 5.0),
        first_token=r.duration("first_token", 60.0),
        idle=r.duration("idle", 60.0),
        total=r.duration("total", 600.0),
    )
    r.finish()
    return t


def _parse_mock(r: Reader) -> MockSpec:
    return MockSpec(
        first_token_ms=r.float("first_token_ms", 0.0, min_value=0),
        tokens_per_s=r.float("tokens_per_s", 0.0, min_value=0),
        output_tokens=r.int("output_tokens", 16, min_value=1),
        fail_mode=r.choice("fail_mode", MOCK_FAIL_MODES, None),
        fail_rate=r.float("fail_rate", 0.0, min_value=0, max_value=1),
        embedding_dim=r.int("embedding_dim", 384, min_value=1),
        context_window=r.int("context_window", 8192, min_value=1),
    )


def _parse_backend(name: str, r: Reader) -> BackendConfig:
    kind = r.choice("kind", BACKEND_KINDS)
    url = r.str("url", None)
    if kind in _URL_KINDS and url is None:
        raise r.error("url", f"is required for kind {kind}")
    headers = r.raw("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise r.error("headers", "expected a mapping of header names to strings")
    backend = BackendConfig(
        name=name,
        kind=kind,
        url=url.rstrip("/") if url else None,
        model=r.str("model", None),
        api_key=r.str("api_key", None),
        timeouts=_parse_timeouts(r.section("timeouts")),
        max_connections=r.int("max_connections", 256, min_value=1),
        headers={str(k): v for k, v in headers.items()},
        mock=_parse_mock(r) if kind == "mock" else None,
        tgi_messages_api=r.bool("messages_api", False) if kind == "tgi" else False,
    )
    if kind == "litellm" and backend.model is None:
        raise r.error("model", "is required for kind litellm (e.g. 'anthropic/claude-sonnet-4')")
    r.finish()
    return backend


def _parse_deployments(r: Reader) -> tuple[Deployment, ...]:
    raw = r.raw("deployments")
    if not isinstance(raw, list) or not raw:
        raise r.error("deployments", "expected a non-empty list of backend names")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            out.append(Deployment(item))
            continue
        d = Reader(item, f"{r.sub_path('deployments')}[{i}]", r.source)
        out.append(Deployment(d.str("backend"), d.float("weight", 1.0, min_value=0)))
        d.finish()
    return tuple(out)


def _parse_price(r: Reader | None) -> Price | None:
    if r is None:
        return None
    price = Price(r.float("input_per_mtok", 0.0, min_value=0), r.float("output_per_mtok", 0.0, min_value=0))
    r.finish()
    return price


def _parse_model(name: str, r: Reader) -> ModelConfig:
    resilience = parse_resilience(r)
    model = ModelConfig(
        name=name,
        deployments=_parse_deployments(r),
        type=r.choice("type", MODEL_TYPES, "chat"),
        balance=r.choice("balance", BALANCE_STRATEGIES, "round_robin"),
        retries=r.int("retries", 1, min_value=0),
        fallbacks=tuple(rule.model for rule in resilience.fallbacks),
        price=_parse_price(r.section("price")),
        context_window=r.int("context_window", None, min_value=1),
        owned_by=r.str("owned_by", "turnout"),
        resilience=resilience,
    )
    r.finish()
    return model


def _check_references(
    source: str, backends: Mapping[str, BackendConfig], models: Mapping[str, ModelConfig],
) -> None:
    for model in models.values():
        for i, dep in enumerate(model.deployments):
            if dep.backend not in backends:
                raise ConfigError(
                    source, f"models.{model.name}.deployments[{i}]",
                    f"unknown backend {dep.backend!r} (defined: {', '.join(sorted(backends)) or 'none'})",
                )
        for i, fallback in enumerate(model.fallbacks):
            if fallback not in models or fallback == model.name:
                raise ConfigError(
                    source, f"models.{model.name}.fallbacks[{i}]",
                    f"expected another model alias; got {fallback!r}",
                )
