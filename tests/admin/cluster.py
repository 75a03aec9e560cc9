"""Real gateway processes on loopback for the multi-replica must-shows: one standalone mock
backend and N ``turnout serve`` processes sharing PostgreSQL (a unique schema) and Redis (a
unique key prefix)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.admin.conftest import PG_URL, REDIS_URL, drop_schema, unique
from tests.conftest import wait_http_blocking

ADMIN_KEY = "cluster-admin-key"
TURNOUT = [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]

CONFIG = """
server: {{grace_period: 10s}}
backends:
  mock: {{kind: openai, url: "http://127.0.0.1:{mock_port}", model: mock-small}}
models:
  small:
    deployments: [mock]
    price: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}   # 1 USD per token
redis: {{url: "{redis}"}}
admin:
  database: "{pg}"
  schema: {schema}
  admin_key: {admin_key}
  redis_prefix: "{prefix}"
  usage: {{flush_interval: {flush}, spill_dir: "{spill}"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    tmp: Path
    schema: str = field(default_factory=lambda: unique("tt_cluster_"))
    prefix: str = field(default_factory=lambda: unique("tt:cluster:") + ":")
    flush: str = "200ms"
    cache: str = ""  # an extra top-level ``cache:`` section; "{prefix}" becomes the Redis prefix
    mock_port: int = 0
    gateways: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    mock: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.tmp / "gateway.yaml"

    def start_mock(self) -> None:
        self.mock_port = free_port()
        self.mock = subprocess.Popen(
            [*TURNOUT, "mock-backend", "--port", str(self.mock_port), "--model", "mock-small",
             "--output-tokens", "10", "--first-token-ms", "20"],
        )
        wait_http_blocking(f"http://127.0.0.1:{self.mock_port}/v1/models", proc=self.mock)
        self.config_path.write_text(CONFIG.format(
            mock_port=self.mock_port, redis=REDIS_URL, pg=PG_URL, schema=self.schema,
            admin_key=ADMIN_KEY, prefix=self.prefix, flush=self.flush, spill=self.tmp / "spill",
        ) + self.cache.replace("{prefix}", self.prefix))

    def start_gateway(self) -> int:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen(
            [*TURNOUT, "serve", "--config", str(self.config_path), "--port", str(port)], env=env,
        )
        wait_http_blocking(f"http://127.0.0.1:{port}/health", proc=proc)
        self.gateways[port] = proc
        return port

    def stop_gateway(self, port: int, sig: int = signal.SIGTERM) -> int:
        proc = self.gateways.pop(port)
        proc.send_signal(sig)
        return proc.wait(timeout=30)

    def close(self) -> None:
        for port in list(self.gateways):
            with contextlib.suppress(Exception):
                self.stop_gateway(port)
        if self.mock is not None:
            self.mock.terminate()
            self.mock.wait(timeout=10)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        with ThreadPoolExecutor(1) as pool:  # callers may be inside an event loop
            pool.submit(asyncio.run, drop_schema(self.schema)).result()


@contextlib.contextmanager
def running_cluster(tmp: Path, gateways: int, flush: str = "200ms",
                    cache: str = "") -> Iterator[tuple[Cluster, list[int]]]:
    cluster = Cluster(tmp, flush=flush, cache=cache)
    try:
        cluster.start_mock()
        ports = [cluster.start_gateway()]  # the first one applies the migrations
        ports += [cluster.start_gateway() for _ in range(gateways - 1)]
        yield cluster, ports
    finally:
        cluster.close()
