"""Standalone OpenAI-compatible mock server: ``turnout mock-backend --port N ...``.

Endpoints: POST /v1/chat/completions, /v1/completions, /v1/embeddings (stream and not, with the
failure modes of mock_answers), GET /v1/models, /health (503 while a failure mode that makes
every request fail is on), /metrics (vLLM gauges), and for tests:
- POST /mock/config: JSON with any ``MockSpec`` field and ``waiting`` / ``running`` /
  ``kv_cache_usage`` gauges (null resets a gauge to live values); answers the new settings;
- GET /mock/stats: request, in-flight, disconnect and token counters.
``start_mock_server`` runs it inside the caller's loop (tests); ``main`` runs it on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable
from typing import Any

import orjson

from backends.mock import LoadGauges
from backends.mock_answers import ServerState, embed, generate, json_body, metrics, models
from backends.mock_engine import effective_fail_rate
from backends.mock_http import Answer, HttpProtocol, Request, error_response, response
from configs.loader import MOCK_FAIL_MODES
from configs.schema import MockSpec

_DOWN_MODES = frozenset({"http_500", "reset", "timeout"})
_SPEC_FIELDS = {f.name: f.type for f in dataclasses.fields(MockSpec)}
_GAUGES = ("waiting", "running", "kv_cache_usage")
Route = Callable[[ServerState, bytes], Answer]


def _health(state: ServerState, _: bytes) -> Answer:
    spec = state.spec
    if spec.fail_mode in _DOWN_MODES and effective_fail_rate(spec) >= 1.0:
        return response(503, orjson.dumps({"status": "failing", "fail_mode": spec.fail_mode}))
    return response(200, b'{"status":"ok"}')


def _settings(state: ServerState) -> dict[str, Any]:
    return {**dataclasses.asdict(state.spec), **dataclasses.asdict(state.gauges)}


def _number(key: str, value: object, integer: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= (1 if integer else 0)
    if not ok or (integer and not isinstance(value, int)):
        raise ValueError(f"{key}: expected {'a positive integer' if integer else 'a non-negative number'}")
    return float(value)  # type: ignore[arg-type]


def _apply_config(state: ServerState, changes: dict[str, Any]) -> None:
    spec: dict[str, Any] = {}
    gauges: dict[str, Any] = {}
    for key, value in changes.items():
        if key in _GAUGES:
            gauges[key] = None if value is None else _number(key, value, False)
        elif key == "fail_mode":
            if value is not None and value not in MOCK_FAIL_MODES:
                raise ValueError(f"fail_mode: expected one of {', '.join(MOCK_FAIL_MODES)} or null")
            spec[key] = value
        elif key in _SPEC_FIELDS:
            integer = _SPEC_FIELDS[key] == "int"
            number = _number(key, value, integer)
            spec[key] = int(number) if integer else number
        else:
            raise ValueError(f"unknown setting: {key}")
    if spec.get("fail_rate", 0.0) > 1.0:
        raise ValueError("fail_rate: expected a number between 0 and 1")
    state.set_spec(dataclasses.replace(state.spec, **spec))
    state.gauges = dataclasses.replace(state.gauges, **gauges)


def _config(state: ServerState, raw: bytes) -> Answer:
    body = json_body(raw)
    if isinstance(body, bytes):
        return body
    try:
        _apply_config(state, body)
    except ValueError as exc:
        return error_response(400, str(exc))
    return response(200, orjson.dumps(_settings(state)))


ROUTES: dict[tuple[bytes, bytes], Route] = {
    (b"POST", b"/v1/chat/completions"): lambda s, b: generate(s, "chat", b),
    (b"POST", b"/v1/completions"): lambda s, b: generate(s, "completion", b),
    (b"POST", b"/v1/embeddings"): embed,
    (b"GET", b"/v1/models"): lambda s, _: models(s),
    (b"GET", b"/health"): _health,
    (b"GET", b"/metrics"): lambda s, _: metrics(s),
    (b"POST", b"/mock/config"): _config,
    (b"GET", b"/mock/config"): lambda s, _: response(200, orjson.dumps(_settings(s))),
    (b"GET", b"/mock/stats"): lambda s, _: response(200, orjson.dumps(dataclasses.asdict(s.stats))),
}
_PATHS = frozenset(path for _, path in ROUTES)


class MockApp:
    """Routes one parsed request to its answer."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def __call__(self, req: Request) -> Answer:
        route = ROUTES.get((req.method, req.path))
        if route is not None:
            return route(self.state, req.body)
        if req.path in _PATHS:
            return error_response(405, f"method {req.method.decode()} not allowed")
        return error_response(404, f"unknown path {req.path.decode(errors='replace')}", code="not_found")


class MockServerHandle:
    """A running server: ``port``, ``url``, the mutable ``state``; ``close()`` stops it and drops
    open connections."""

    def __init__(self, server: asyncio.Server, state: ServerState, connections: set[HttpProtocol]) -> None:
        self.server = server
        self.state = state
        self._connections = connections
        sock = server.sockets[0].getsockname()
        self.host: str = sock[0]
        self.port: int = sock[1]
        self.url = f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        self.server.close()
        for proto in list(self._connections):
            proto.abort()
        await self.server.wait_closed()


async def start_mock_server(
    host: str = "127.0.0.1", port: int = 0, spec: MockSpec | None = None, *, model: str = "mock",
    gauges: LoadGauges | None = None, seed: int | None = None, reuse_port: bool = False,
) -> MockServerHandle:
    """Serve in the running loop; ``port=0`` picks a free port (see ``handle.port``)."""
    state = ServerState(spec or MockSpec(), model, gauges or LoadGauges())
    if seed is not None:
        state.rng.seed(seed)
    app = MockApp(state)
    connections: set[HttpProtocol] = set()

    def accept() -> HttpProtocol:
        state.stats.connections += 1
        return HttpProtocol(app, connections)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(accept, host, port, reuse_port=reuse_port or None, backlog=1024)
    return MockServerHandle(server, state, connections)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="turnout mock-backend", description="OpenAI-compatible mock LLM server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="mock", help="model id served by /v1/models and echoed by default")
    p.add_argument("--first-token-ms", type=float, default=0.0)
    p.add_argument("--tokens-per-s", type=float, default=0.0, help="0: every token at once")
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--fail-mode", choices=MOCK_FAIL_MODES, default=None)
    p.add_argument("--fail-rate", type=float, default=0.0, help="0 with --fail-mode: every request")
    p.add_argument("--embedding-dim", type=int, default=384)
    p.add_argument("--context-window", type=int, default=8192)
    p.add_argument("--waiting", type=float, default=None, help="vllm:num_requests_waiting gauge")
    p.add_argument("--running", type=float, default=None, help="vllm:num_requests_running gauge")
    p.add_argument("--kv-cache-usage", type=float, default=None, help="vllm:gpu_cache_usage_perc gauge")
    p.add_argument("--seed", type=int, default=None, help="seed for fail_rate draws")
    p.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT, to run several processes")
    return p


def _spec(args: argparse.Namespace) -> MockSpec:
    if not 0.0 <= args.fail_rate <= 1.0:
        raise ValueError("--fail-rate must be between 0 and 1")
    if args.output_tokens < 1 or args.embedding_dim < 1 or args.context_window < 1:
        raise ValueError("--output-tokens, --embedding-dim and --context-window must be >= 1")
    return MockSpec(
        first_token_ms=args.first_token_ms, tokens_per_s=args.tokens_per_s,
        output_tokens=args.output_tokens, fail_mode=args.fail_mode, fail_rate=args.fail_rate,
        embedding_dim=args.embedding_dim, context_window=args.context_window,
    )


async def _serve(args: argparse.Namespace, spec: MockSpec) -> None:
    gauges = LoadGauges(args.waiting, args.running, args.kv_cache_usage)
    handle = await start_mock_server(
        args.host, args.port, spec, model=args.model, gauges=gauges, seed=args.seed,
        reuse_port=args.reuse_port,
    )
    sys.stdout.write(f"turnout mock backend listening on {handle.url} (model {args.model})\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await handle.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``turnout mock-backend``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        spec = _spec(args)
    except ValueError as exc:
        parser.error(str(exc))
    import uvloop  # only the standalone process runs on uvloop; tests use their own loop

    uvloop.run(_serve(args, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
