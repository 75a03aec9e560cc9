from __future__ import annotations

import pytest

from configs import ConfigError, load_text

BASE = """
backends: {sim: {kind: mock}}
models: {m: {deployments: [sim]}}
"""


def test_admin_section_full() -> None:
    cfg = load_text(BASE + """
admin:
  database: postgresql://postgres@127.0.0.1/test
  schema: turnout
  admin_key: "${KEY}"
  key_cache_ttl: 30s
  reservation_lease: 5m
  usage: {batch: 100, flush_interval: 250ms, queue: 1000, spill_dir: /tmp/spill}
  gpu_prices: {m: {usd_per_gpu_hour: 3.6, gpus: 2, tokens_per_s: 1000}}
""", env={"KEY": "s3cret"})
    admin = cfg.admin
    assert admin is not None and admin.admin_key == "s3cret" and admin.schema == "turnout"
    assert admin.key_cache_ttl == 30 and admin.reservation_lease == 300
    assert admin.usage.flush_interval == 0.25 and admin.usage.batch == 100
    assert admin.gpu_prices["m"].usd_per_token == pytest.approx(3.6 * 2 / 3600 / 1000)


def test_absent_section_means_auth_off() -> None:
    assert load_text(BASE).admin is None


@pytest.mark.parametrize(("snippet", "path"), [
    ("admin: {databse: x}", "admin.databse"),
    ("admin: {database: 'mysql://x'}", "admin.database"),
    ("admin: {usage: {batch: 0}}", "admin.usage.batch"),
    ("admin: {key_cache_ttl: 10}", "admin.key_cache_ttl"),
    ("admin: {gpu_prices: {m: {usd_per_gpu_hour: 1, gpu: 2}}}", "admin.gpu_prices.m.gpu"),
])
def test_strict_errors_name_the_key(snippet: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(BASE + snippet)
    assert info.value.path == path
