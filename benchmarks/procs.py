"""Processes under test: the mock upstream, Turnout, and how they are placed on CPUs.

Placement: the system under test (Turnout or a peer gateway) gets the last CPU; the mock and
the load generator share the others. Every gateway in one run gets the same placement, so
their numbers compare; on a 1-CPU machine everything shares it (the report says so).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_split() -> tuple[list[int], list[int]]:
    """(CPUs for the system under test, CPUs for the mock and the load generator)."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[-1:], cpus[:-1]) if len(cpus) > 1 else (cpus, cpus)


def pinned(cmd: list[str], cpus: list[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus)), *cmd] if shutil.which("taskset") else cmd


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    version: str = ""
    flags: list[str] = field(default_factory=list)

    def rss_mb(self) -> float:
        """Resident memory of the process and its children, in MiB."""
        return sum(_rss_kb(pid) for pid in [self.proc.pid, *_children(self.proc.pid)]) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += [int(child), *_children(int(child))]
    except OSError:
        return out
    return out


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0,
              headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before becoming ready")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1):
                return
        except (urllib.error.URLError, OSError):
            threading.Event().wait(0.1)  # plain blocking process, no event loop here
    raise RuntimeError(f"{url} not ready within {timeout:.0f}s")


def start_mock(cpus: list[int], first_token_ms: float = 0.0, output_tokens: int = 16,
               tokens_per_s: float = 0.0) -> Service:
    port = free_port()
    flags = ["--port", str(port), "--first-token-ms", str(first_token_ms), "--output-tokens", str(output_tokens),
             "--tokens-per-s", str(tokens_per_s)]
    proc = subprocess.Popen(pinned([sys.executable, "-m", "backends.mock_server", *flags], cpus), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc)
    return Service("mock", proc, url, flags=flags)


def start_turnout(config: Path, cpus: list[int], name: str = "turnout") -> Service:
    port = free_port()
    flags = ["serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(pinned([sys.executable, "-m", "gateway.cli", *flags], cpus), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc)
    return Service(name, proc, url, version=_turnout_version(), flags=flags)


def _turnout_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=False).stdout.strip()
    except OSError:
        rev = ""
    return f"turnout 0.1.0 ({rev or 'unknown'}), python {sys.version.split()[0]}"
