"""Turnout configs for each feature set, generated into the run's temp dir, and the admin
bootstrap (tenant + key) when auth, limits and metering are on."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

ADMIN_KEY = "bench-admin-key-0123456789"
MODEL = "bench"


@dataclass(frozen=True, slots=True)
class Features:
    """One gateway configuration. ``admin`` = API-key auth + RPM/TPM/budget limits + metering."""

    name: str
    metrics: bool = True
    admin: bool = False
    cache: bool = False
    access_log: bool = False


BASELINE = Features("none", metrics=False)
METRICS = Features("metrics")
ADMIN_ONLY = Features("auth+limits+metering", metrics=False, admin=True)
PRODUCTION = Features("production (metrics+auth+limits+metering)", admin=True)
CACHED = Features("cache (exact)", cache=True)


def config_yaml(features: Features, upstreams: list[str], workdir: Path) -> str:
    backends = "\n".join(
        f"  up{i}:\n    kind: openai\n    url: \"{url}\"\n    model: mock\n"
        f"    timeouts: {{connect: 1s, first_token: 5s, idle: 5s, total: 30s}}"
        for i, url in enumerate(upstreams))
    deployments = ", ".join(f"up{i}" for i in range(len(upstreams)))
    text = f"""server: {{host: 127.0.0.1, port: 0, workers: 1}}
logging: {{level: warning}}
backends:
{backends}
models:
  {MODEL}:
    deployments: [{deployments}]
    retries: {1 if len(upstreams) > 1 else 0}
    price: {{input_per_mtok: 0.10, output_per_mtok: 0.20}}
observability:
  metrics: {{enabled: {str(features.metrics).lower()}}}
"""
    if features.access_log:
        text += f"  access_log: {{level: info, path: \"{workdir / 'access.jsonl'}\"}}\n"
    if features.admin:
        text += f"""admin:
  database: "sqlite:///{workdir / 'admin.db'}"
  admin_key: "{ADMIN_KEY}"
  usage: {{spill_dir: "{workdir / 'spill'}"}}
"""
    if features.cache:
        text += "cache:\n  store: memory\n  exact: {ttl: 1h}\n"
    return text


def write_config(features: Features, upstreams: list[str], workdir: Path) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in features.name)[:40]
    path = workdir / f"turnout-{slug}.yaml"
    path.write_text(config_yaml(features, upstreams, workdir))
    return path


def _admin(base: str, method: str, path: str, body: object) -> dict[str, object]:
    req = urllib.request.Request(f"{base}/admin/v1{path}", data=orjson.dumps(body), method=method,
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        out: dict[str, object] = orjson.loads(resp.read())
        return out


def bootstrap_key(base: str) -> str:
    """A tenant with generous RPM/TPM/budget limits (so every request is checked, none refused)
    and one API key for it; returns the key."""
    limits = {"rpm": 100_000_000, "tpm": 10_000_000_000, "budget_usd": 1_000_000.0, "budget_period": "month"}
    _admin(base, "POST", "/tenants", {"id": "bench", "name": "bench", "limits": limits})
    created = _admin(base, "POST", "/tenants/bench/keys", {"name": "bench", "limits": {}})
    return str(created["key"])
