"""``turnout admin`` against a real gateway on loopback (the CLI runs in a thread: it owns its
own event loop, like the real command)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from admin import cli
from configs import load_text
from gateway.app import create_app
from tests.admin.test_plugin import gateway_config


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    rc = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return rc, orjson.loads(out or err)


async def test_cli_round_trip(
    aiohttp_client: Callable[..., Any], tmp_path: Path, redis_prefix: str, capsys: pytest.CaptureFixture[str],
) -> None:
    client = await aiohttp_client(create_app(load_text(gateway_config(tmp_path, "sqlite", redis_prefix, ""))))
    base = ["--url", str(client.make_url("/")), "--admin-key", "admin-secret"]
    rc, tenant = await run_cli(capsys, *base, "tenants", "create", "acme", "--rpm", "5", "--budget-usd", "2.5")
    assert rc == 0 and tenant["limits"]["rpm"] == 5 and tenant["limits"]["budget_usd"] == 2.5
    rc, key = await run_cli(capsys, *base, "keys", "create", "acme", "--name", "ci", "--expires-in", "30d")
    assert rc == 0 and key["key"].startswith("tk-") and key["expires_at"]
    rc, rotated = await run_cli(capsys, *base, "keys", "rotate", key["id"], "--grace", "10m")
    assert rc == 0 and rotated["id"] != key["id"]
    rc, revoked = await run_cli(capsys, *base, "keys", "revoke", rotated["id"])
    assert rc == 0 and revoked["revoked_at"]
    rc, listed = await run_cli(capsys, *base, "keys", "list", "acme")
    assert [k["id"] for k in listed["data"]] == [key["id"], rotated["id"]]
    rc, budget = await run_cli(capsys, *base, "budget", "--tenant", "acme")
    assert rc == 0 and budget["budget_usd"] == 2.5
    rc, usage = await run_cli(capsys, *base, "usage", "--tenant", "acme", "--group-by", "model,day")
    assert rc == 0 and usage == {"data": []}
    rc, err = await run_cli(capsys, *base, "tenants", "show", "nope")
    assert rc == 1 and "nope" in err["error"]["message"]
    rc, err = await run_cli(capsys, "--url", str(client.make_url("/")), "tenants", "list")
    assert rc == 1 and err["error"]["type"] == "authentication_error"


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "rotate", "abc", "--grace", "10"]) == 2  # durations need units
    assert cli.main(["bogus"]) == 2
