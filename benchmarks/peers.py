"""Peer gateways, installed on request into benchmarks/.peers (gitignored) and run against the
same mock, on the same CPU as Turnout, in the same run.

- LiteLLM proxy: ``pip install 'litellm[proxy]'`` into its own venv; one worker (``--num_workers 1``).
- Portkey gateway: ``npm install @portkey-ai/gateway``; Node, one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.procs import Service, free_port, pinned, wait_http

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
LITELLM_VENV = PEERS_DIR / "litellm-venv"
PORTKEY_DIR = PEERS_DIR / "portkey"
LITELLM_MASTER_KEY = "sk-bench-7f3c9a1e5b2d4f6089ab1cd2ef345678"
PORTKEY_MAIN = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def install(log: Callable[[str], None]) -> None:
    PEERS_DIR.mkdir(exist_ok=True)
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        log("installing LiteLLM proxy into benchmarks/.peers/litellm-venv (pip) ...")
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    if not PORTKEY_MAIN.exists():
        log("installing Portkey gateway into benchmarks/.peers/portkey (npm) ...")
        PORTKEY_DIR.mkdir(exist_ok=True)
        if not (PORTKEY_DIR / "package.json").exists():
            subprocess.run(["npm", "init", "-y"], cwd=PORTKEY_DIR, check=True, capture_output=True)
        subprocess.run(["npm", "install", "@portkey-ai/gateway"], cwd=PORTKEY_DIR, check=True)


def litellm_version() -> str:
    out = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, check=False)
    return f"litellm {out.stdout.strip() or 'unknown'}"


def portkey_version() -> str:
    import json

    meta = json.loads((PORTKEY_MAIN.parents[1] / "package.json").read_text())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return f"@portkey-ai/gateway {meta.get('version')} (node {node})"


def start_litellm(mock_url: str, cpus: list[int], workdir: Path) -> Service:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(f"""model_list:
  - model_name: bench
    litellm_params:
      model: openai/mock
      api_base: {mock_url}/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
general_settings:
  master_key: {LITELLM_MASTER_KEY}
""")
    flags = ["--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    proc = subprocess.Popen(pinned([str(LITELLM_VENV / "bin" / "litellm"), *flags], cpus), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/liveliness", proc, timeout=120)
    return Service("litellm", proc, url, version=litellm_version(), flags=["litellm", *flags])


def portkey_headers(mock_url: str) -> dict[str, str]:
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{mock_url}/v1",
            "Authorization": "Bearer sk-bench"}


def start_portkey(cpus: list[int]) -> Service:
    port = free_port()
    flags = [str(PORTKEY_MAIN), f"--port={port}", "--headless"]
    proc = subprocess.Popen(pinned(["node", *flags], cpus), cwd=PORTKEY_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/", proc, timeout=60)
    return Service("portkey", proc, url, version=portkey_version(), flags=["node", *flags])
