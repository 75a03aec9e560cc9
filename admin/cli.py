"""``turnout admin ...``: the admin API from the command line.

It talks HTTP to a running gateway's ``/admin/v1`` (so every change goes through the same
validation, cache invalidation and pub/sub as the API), never to the database directly.

    turnout admin [--url URL] [--admin-key KEY] tenants list|show ID|create ID|limits ID
    turnout admin keys list TENANT|create TENANT|show KEY|rotate KEY|revoke KEY|limits KEY
    turnout admin budget (--tenant ID | --key ID)
    turnout admin usage [--tenant] [--key] [--model] [--from DAY] [--to DAY] [--group-by day,model]
    turnout admin openapi

Limit flags (create and limits): --models a,b --rpm N --tpm N --concurrency N --budget-usd X
--period day|month --soft-alert F (``limits`` replaces the whole set). The URL and key default
to $TURNOUT_URL (http://127.0.0.1:8080) and $TURNOUT_ADMIN_KEY. Prints JSON; exit 0 on 2xx,
1 on an API error, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from configs.reader import parse_duration


def _limit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="comma-separated allowed models (default: all)")
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--budget-usd", type=float)
    p.add_argument("--period", choices=("day", "month"), default="month")
    p.add_argument("--soft-alert", type=float, default=0.8)


def _limits(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "models": a.models.split(",") if a.models else None, "rpm": a.rpm, "tpm": a.tpm,
        "concurrency": a.concurrency, "budget_usd": a.budget_usd, "budget_period": a.period,
        "soft_alert": a.soft_alert,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout admin", description="Turnout admin API client")
    parser.add_argument("--url", default=os.environ.get("TURNOUT_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--admin-key", default=os.environ.get("TURNOUT_ADMIN_KEY"))
    sub = parser.add_subparsers(dest="group", required=True)
    tenants = sub.add_parser("tenants").add_subparsers(dest="action", required=True)
    tenants.add_parser("list")
    tenants.add_parser("show").add_argument("id")
    create = tenants.add_parser("create")
    create.add_argument("id")
    create.add_argument("--name")
    _limit_flags(create)
    limits = tenants.add_parser("limits")
    limits.add_argument("id")
    _limit_flags(limits)
    keys = sub.add_parser("keys").add_subparsers(dest="action", required=True)
    keys.add_parser("list").add_argument("tenant")
    kcreate = keys.add_parser("create")
    kcreate.add_argument("tenant")
    kcreate.add_argument("--name", default="")
    kcreate.add_argument("--expires-in", help="duration, e.g. 30d")
    _limit_flags(kcreate)
    for name in ("show", "revoke"):
        keys.add_parser(name).add_argument("id")
    rotate = keys.add_parser("rotate")
    rotate.add_argument("id")
    rotate.add_argument("--grace", default="1h", help="how long the old key keeps working")
    klimits = keys.add_parser("limits")
    klimits.add_argument("id")
    _limit_flags(klimits)
    budget = sub.add_parser("budget").add_mutually_exclusive_group(required=True)
    budget.add_argument("--tenant")
    budget.add_argument("--key")
    usage = sub.add_parser("usage")
    for flag in ("--tenant", "--key", "--model", "--from", "--to"):
        usage.add_argument(flag)
    usage.add_argument("--group-by", default="day")
    sub.add_parser("openapi")
    return parser


def _tenants(a: argparse.Namespace) -> tuple[str, str, Any]:
    if a.action == "list":
        return "GET", "/tenants", None
    if a.action == "show":
        return "GET", f"/tenants/{a.id}", None
    if a.action == "create":
        return "POST", "/tenants", {"id": a.id, "name": a.name or a.id, "limits": _limits(a)}
    return "PUT", f"/tenants/{a.id}/limits", {"limits": _limits(a)}


def _keys(a: argparse.Namespace) -> tuple[str, str, Any]:
    if a.action == "list":
        return "GET", f"/tenants/{a.tenant}/keys", None
    if a.action == "create":
        body = {"name": a.name, "limits": _limits(a)}
        if a.expires_in:
            body["expires_in"] = parse_duration(a.expires_in)
        return "POST", f"/tenants/{a.tenant}/keys", body
    if a.action == "show":
        return "GET", f"/keys/{a.id}", None
    if a.action == "revoke":
        return "POST", f"/keys/{a.id}/revoke", None
    if a.action == "rotate":
        return "POST", f"/keys/{a.id}/rotate", {"grace_s": parse_duration(a.grace)}
    return "PUT", f"/keys/{a.id}/limits", {"limits": _limits(a)}


def plan(a: argparse.Namespace) -> tuple[str, str, Any]:
    """(method, path under /admin/v1, JSON body or None) for parsed arguments."""
    if a.group == "tenants":
        return _tenants(a)
    if a.group == "keys":
        return _keys(a)
    if a.group == "budget":
        return "GET", f"/tenants/{a.tenant}/budget" if a.tenant else f"/keys/{a.key}/budget", None
    if a.group == "usage":
        query = {k: v for k, v in (("tenant", a.tenant), ("key", a.key), ("model", a.model),
                                   ("from", getattr(a, "from")), ("to", a.to),
                                   ("group_by", a.group_by)) if v}
        return "GET", f"/usage?{urlencode(query)}", None
    return "GET", "/openapi.json", None


async def _call(url: str, admin_key: str | None, method: str, path: str, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    async with aiohttp.ClientSession() as session, session.request(
        method, f"{url.rstrip('/')}/admin/v1{path}", json=body, headers=headers,
    ) as resp:
        raw = await resp.read()
        try:
            return resp.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return resp.status, {"error": {"message": raw.decode(errors="replace")}}


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        method, path, body = plan(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    except ValueError as exc:
        sys.stderr.write(f"turnout admin: {exc}\n")
        return 2
    try:
        status, data = asyncio.run(_call(args.url, args.admin_key, method, path, body))
    except aiohttp.ClientError as exc:
        sys.stderr.write(f"turnout admin: cannot reach {args.url}: {exc}\n")
        return 1
    out = sys.stdout if 200 <= status < 300 else sys.stderr
    out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if 200 <= status < 300 else 1
