"""``turnout`` command line.

    turnout serve [--config PATH] [--host H] [--port P] [--workers W]
    turnout check-config PATH
    turnout mock-backend --port N [options]     (backends.mock_server)
    turnout admin ...                            (admin.cli, when installed)

uvloop is installed here and only here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from configs import ConfigError, load
from configs.environment import prepare_offline_environment


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.server import default_config_path

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=default_config_path(), help="YAML config (default: embedded)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--workers", type=int, help="override server.workers (SO_REUSEPORT processes)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout", description="OpenAI-compatible LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path")
    sub.add_parser("mock-backend", help="run the standalone mock OpenAI-compatible server", add_help=False)
    sub.add_parser("admin", help="tenant, key and usage administration", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    prepare_offline_environment()
    # Subcommands owned by other packages take their own argv.
    if args_list[:1] == ["mock-backend"]:
        rc: int = importlib.import_module("backends.mock_server").main(args_list[1:])
        return rc
    if args_list[:1] == ["admin"]:
        rc = importlib.import_module("admin.cli").main(args_list[1:])
        return rc
    args = build_parser().parse_args(args_list)
    if args.command == "check-config":
        return _check_config(args.path)
    return _serve(args)


def _check_config(path: str) -> int:
    try:
        cfg = load(path)
    except ConfigError as exc:
        sys.stderr.write(f"invalid config: {exc}\n")
        return 1
    from gateway.runtime import classify_error  # noqa: F401 - proves the runtime imports cleanly
    from routing import ROUTERS

    for name, model in cfg.models.items():
        if model.balance not in ROUTERS:
            sys.stderr.write(f"invalid config: {path}: models.{name}.balance: strategy "
                             f"{model.balance!r} is not available in this build\n")
            return 1
    sys.stdout.write(f"{path}: OK ({len(cfg.backends)} backends, {len(cfg.models)} models)\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"invalid config: {exc}\n")
        return 1
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host = args.host or cfg.server.host
    port = cfg.server.port if args.port is None else args.port
    workers = args.workers or cfg.server.workers
    from gateway import server

    if workers > 1:
        return server.supervise(args.config, host, port, workers, cfg.server.grace_period)
    import uvloop

    uvloop.run(server.run_worker(cfg, args.config, host, port, args.reuse_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
