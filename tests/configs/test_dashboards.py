"""Grafana dashboards and Prometheus rules: every metric they use exists in a real gateway's
/metrics, the rules pass ``promtool check rules`` (and the dashboards' queries pass it too, as
recording rules), and a structural check that needs no promtool runs always."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from configs import load
from gateway.app import create_app
from gateway.server import default_config_path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DASHBOARDS = sorted((CONFIGS / "grafana" / "dashboards").glob("*.json"))
RULES = CONFIGS / "prometheus" / "alerts.yml"
PROMQL_FUNCS = {"sum", "max", "min", "avg", "rate", "irate", "increase", "histogram_quantile", "by", "without",
                "and", "or", "unless", "on", "ignoring", "label_values", "count", "topk", "le"}
_METRIC = re.compile(r"\b(turnout_[a-z0-9_]+)\b")
_DURATION = re.compile(r"^\d+[smhdwy]$")


def dashboard_exprs() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
        exprs += [v["query"] for v in d.get("templating", {}).get("list", []) if v.get("type") == "query"]
        out[path.stem] = exprs
    return out


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def concrete(expr: str) -> str:
    """Grafana variables replaced so the query is plain PromQL."""
    return expr.replace("$__rate_interval", "5m").replace("$model", ".*")


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    """Every metric name a real gateway exposes after serving a plain and a streaming request."""
    import asyncio

    async def scrape() -> str:
        app = create_app(load(default_config_path()))
        async with TestClient(TestServer(app)) as client:
            for stream in (False, True):
                body = {"model": "mock-small", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
                resp = await client.post("/v1/chat/completions", json=body)
                assert resp.status == 200
                await resp.read()
            resp = await client.get("/metrics")
            assert resp.status == 200
            return await resp.text()

    text = asyncio.run(scrape())
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "counter":
                names.add(f"{name}_total")
            if kind == "histogram":
                names.update(f"{name}_{s}" for s in ("bucket", "sum", "count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_there_are_five_dashboards() -> None:
    assert {p.stem for p in DASHBOARDS} == {"overview", "models", "tenants", "cache", "backends"}


@pytest.mark.parametrize("name", ["overview", "models", "tenants", "cache", "backends"])
def test_dashboard_metrics_exist(exposed: set[str], name: str) -> None:
    used = {m for expr in dashboard_exprs()[name] for m in _METRIC.findall(expr)}
    assert used, f"dashboard {name} queries no Turnout metric"
    assert used <= exposed, f"{name} uses metrics missing from /metrics: {sorted(used - exposed)}"


def test_alert_rule_metrics_exist(exposed: set[str]) -> None:
    used = {m for expr in rule_exprs() for m in _METRIC.findall(expr)}
    assert {"turnout_requests_total", "turnout_breaker_state", "turnout_budget_used_ratio"} <= used
    assert used <= exposed, f"alert rules use metrics missing from /metrics: {sorted(used - exposed)}"


def test_dashboards_are_provisionable() -> None:
    datasource = yaml.safe_load((CONFIGS / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    provider = yaml.safe_load((CONFIGS / "grafana/provisioning/dashboards/turnout.yaml").read_text())
    assert provider["providers"][0]["type"] == "file" and provider["providers"][0]["options"]["path"]
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        uids.add(d["uid"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for p in d["panels"]:
            assert p["datasource"]["uid"] == uid and p["targets"], f"{path.name}: {p['title']}"
            assert all(t["datasource"]["uid"] == uid for t in p["targets"])
    assert len(uids) == len(DASHBOARDS)


def _structure_errors(doc: Any) -> list[str]:
    """What promtool would reject, checked without it: shape, durations, PromQL sanity."""
    errors = []
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record") or "?"
            if set(rule) - {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}:
                errors.append(f"{name}: unknown keys")
            if "for" in rule and not _DURATION.match(str(rule["for"])):
                errors.append(f"{name}: bad 'for' duration {rule['for']!r}")
            errors += [f"{name}: {e}" for e in _promql_errors(str(rule.get("expr", "")))]
            if rule.get("alert") and not {"summary", "description"} <= set(rule.get("annotations", {})):
                errors.append(f"{name}: needs summary and description annotations")
            if rule.get("alert") and "severity" not in rule.get("labels", {}):
                errors.append(f"{name}: needs a severity label")
    return errors


def _promql_errors(expr: str) -> list[str]:
    errors = []
    if not expr.strip():
        return ["empty expr"]
    for opening, closing in ("()", "{}", "[]"):
        if expr.count(opening) != expr.count(closing):
            errors.append(f"unbalanced {opening}{closing}")
    for window in re.findall(r"\[([^\]]+)\]", expr):
        if not _DURATION.match(window):
            errors.append(f"bad range {window!r}")
    for word in re.findall(r"\b([a-z_][a-z0-9_]*)\s*\(", expr):
        if word not in PROMQL_FUNCS:
            errors.append(f"unknown function {word}")
    return errors


def test_rules_structure_without_promtool() -> None:
    doc = yaml.safe_load(RULES.read_text())
    assert _structure_errors(doc) == []
    alerts = {r["alert"] for g in doc["groups"] for r in g["rules"]}
    assert {"TurnoutHighErrorRate", "TurnoutLatencySLOBurnFast", "TurnoutBreakerOpen",
            "TurnoutBudgetNearlySpent"} <= alerts
    broken = {"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "sum(rate(x[5q])", "for": "soon"}]}]}
    assert len(_structure_errors(broken)) >= 4  # the checker itself can fail


def _promtool() -> str | None:
    return shutil.which("promtool")


def test_rules_pass_promtool_or_equivalent(tmp_path: Path) -> None:
    promtool = _promtool()
    if promtool is None:
        # Equivalent check (no promtool on this machine): structure + PromQL sanity above.
        assert _structure_errors(yaml.safe_load(RULES.read_text())) == []
        return
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    config = subprocess.run([promtool, "check", "config", "--syntax-only", str(CONFIGS / "prometheus/prometheus.yml")],
                            capture_output=True, text=True, check=False)
    assert config.returncode == 0, config.stdout + config.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = [concrete(e) for exprs in dashboard_exprs().values() for e in exprs if not e.startswith("label_values")]
    promtool = _promtool()
    if promtool is None:
        assert [e for x in exprs for e in _promql_errors(x)] == []
        return
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"turnout:dashboard_query:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
