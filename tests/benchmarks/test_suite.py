"""The benchmark suite's parts: wrk Lua/parse, generated configs, report, a real short wrk run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import features as feat
from benchmarks import report
from benchmarks.__main__ import build_parser, main
from benchmarks.load import lua_script, parse_wrk, run_wrk
from benchmarks.procs import cpu_split, start_mock
from configs import load_text

WRK_OUT = """Running 1s test @ http://127.0.0.1:1
WRKJSON {"requests":1000,"duration_us":2000000,"socket_errors":1,"non2xx":2,"mean_us":1500.5,"max_us":9000,\
"p50_us":1200,"p90_us":2000,"p99_us":5000,"p999_us":8000}
"""


def test_parse_wrk_summary() -> None:
    res = parse_wrk("x", WRK_OUT, 64, "closed")
    assert (res.requests, res.rps, res.p50_ms, res.p99_ms, res.errors) == (1000, 500.0, 1.2, 5.0, 3)
    with pytest.raises(RuntimeError, match="no summary"):
        parse_wrk("x", "Requests/sec: 5\n", 1, "closed")


def test_lua_script_quotes_body_and_headers_and_poisson_delay() -> None:
    script = lua_script(b'{"a": "]]"}', {"Authorization": "Bearer k"}, "/v1/chat/completions", 200.0, 100)
    assert 'wrk.body = [==[{"a": "]]"}]==]' in script
    assert "wrk.headers[ [==[Authorization]==] ] = [==[Bearer k]==]" in script
    assert "delay = function() return -math.log(1 - math.random()) * 500.0 end" in script  # 100 conns / 200 req/s
    assert "delay" not in lua_script(b"{}", {}, "/", None, 1)


@pytest.mark.parametrize("features", [feat.BASELINE, feat.PRODUCTION, feat.CACHED,
                                      feat.Features("log", access_log=True)])
def test_generated_configs_load(features: feat.Features, tmp_path: Path) -> None:
    cfg = load_text(feat.config_yaml(features, ["http://127.0.0.1:1", "http://127.0.0.1:2"], tmp_path))
    assert cfg.models[feat.MODEL].retries == 1 and len(cfg.models[feat.MODEL].deployments) == 2
    assert cfg.observability.metrics.enabled is features.metrics
    assert (cfg.admin is not None) is features.admin and (cfg.cache is not None) is features.cache
    assert cfg.observability.access_log.enabled is features.access_log


def _results() -> dict[str, Any]:
    row = {"label": "x", "connections": 1, "seconds": 1.0, "requests": 10, "rps": 10.0, "p50_ms": 1.0, "p90_ms": 1.0,
           "p99_ms": 2.0, "p999_ms": 2.0, "mean_ms": 1.0, "errors": 0, "mode": "closed"}
    return {"meta": {"started": "t", "cpus": 2, "cpu_model": "cpu", "sut_cpus": [1], "load_cpus": [0], "seconds": 1,
                     "mode": "closed"},
            "services": {"turnout": {"version": "v", "flags": ["serve"]}},
            "scenarios": {"overhead": {"features": "f", "mode": "closed", "turnout_rss_mb": {"u": 50.0}, "rows": [
                {"upstream_ms": 0.0, "connections": 1, "direct": row, "turnout": {**row, "p50_ms": 1.2},
                 "added_p50_ms": 0.2, "added_p99_ms": 0.0, "rps_ratio": 1.0}]},
                "features": {"rows": [{**row, "features": "none", "rps_vs_none": 1.0, "added_p50_vs_none_ms": 0.0,
                                       "rss_mb": 40.0}]}}}


def test_report_writes_json_markdown_and_charts(tmp_path: Path) -> None:
    paths = report.write_all(tmp_path, _results())
    assert {p.name for p in paths} == {"results.json", "results.md", "overhead.png", "features.png"}
    assert orjson.loads((tmp_path / "results.json").read_bytes())["meta"]["cpus"] == 2
    md = (tmp_path / "results.md").read_text()
    assert "| 0.0 | 1 | 10.0 | 10.0 | 1.0 | 1.0 | 1.2 | 0.2 | 0.0 |" in md
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix == ".png")


def test_cli_defaults_and_unknown_scenario() -> None:
    args = build_parser().parse_args(["run"])
    assert args.concurrency == [1, 16, 64, 256] and args.upstream_ms == [0.0, 20.0] and args.mode == "closed"
    if shutil.which("wrk") is not None:
        assert main(["run", "--scenario", "nope"]) == 2


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (python -m benchmarks setup)")
def test_wrk_against_the_real_mock() -> None:
    _, load = cpu_split()
    mock = start_mock(load)
    try:
        closed = run_wrk("mock", mock.url, b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
                         4, 1, load)
        opened = run_wrk("mock", mock.url, b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
                         8, 1, load, rate=200.0)
    finally:
        mock.stop()
    assert closed.requests > 100 and closed.errors == 0 and closed.p50_ms > 0
    assert 100 <= opened.rps <= 300 and opened.mode == "open"  # Poisson arrivals at ~200 req/s


def test_shared_core_ratios_run_each_pair_at_once_and_take_the_median() -> None:
    import threading

    from benchmarks.load import LoadResult
    from benchmarks.shared_core import shared_ratios

    together = threading.Barrier(2, timeout=5)  # broken unless both loads are running at once

    class FakeRun:
        rps = {"none": [1000.0, 1000.0, 800.0], "admin": [900.0, 700.0, 720.0]}

        def log(self, line: str) -> None:
            pass

        def wrk(self, label: str, svc: object, body: bytes, c: int, headers: dict[str, str]) -> LoadResult:
            together.wait()
            return LoadResult(label, c, 1.0, 1, self.rps[label.split(" ")[0]].pop(0), 1, 1, 1, 1, 1, 0)

    run = FakeRun()
    got = shared_ratios(run, ("none", None, {}), [("admin", None, {})], b"{}", 64, 3)  # type: ignore[arg-type, list-item]
    assert got["admin"]["shared_rounds"] == [0.9, 0.7, 0.9] and got["admin"]["rps_vs_none_shared"] == 0.9
    assert got["admin"]["shared_total_rps"] == 1700

    class FailingRun(FakeRun):
        def wrk(self, label: str, svc: object, body: bytes, c: int, headers: dict[str, str]) -> LoadResult:
            raise RuntimeError("wrk exited 1")

    with pytest.raises(RuntimeError, match="wrk exited 1"):  # a failed load keeps its own error
        shared_ratios(FailingRun(), ("none", None, {}), [("admin", None, {})], b"{}", 64, 1)  # type: ignore[arg-type, list-item]


class _RecordingRun:
    """A Run whose loads return at once, recording the first word of each label in order."""

    def __init__(self) -> None:
        import threading

        self.order: list[str] = []
        self._lock = threading.Lock()  # shared-core loads come from two threads

    def log(self, line: str) -> None:
        return None

    def wrk(self, label: str, svc: object, body: bytes, c: int, headers: dict[str, str]) -> Any:
        from benchmarks.load import LoadResult

        with self._lock:
            self.order.append(label.split(" ")[0])
        return LoadResult(label, c, 1.0, 1, 100.0, 1, 1, 1, 1, 1, 0)


def test_shared_core_rounds_alternate_the_order_of_targets() -> None:
    from benchmarks.shared_core import shared_ratios

    run = _RecordingRun()
    others: list[Any] = [("a", None, {}), ("b", None, {})]
    shared_ratios(run, ("none", None, {}), others, b"{}", 64, 3)  # type: ignore[arg-type]
    assert [name for name in run.order if name != "none"] == ["a", "b", "b", "a", "a", "b"]


def test_interleaved_rounds_alternate_the_order_of_targets() -> None:
    from benchmarks.interleave import measure

    run = _RecordingRun()
    targets: list[Any] = [("a", None, {}), ("b", None, {}), ("c", None, {})]
    got = measure(run, targets, b"{}", [1], 3)  # type: ignore[arg-type]
    assert run.order == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert [row["rounds"] for rows in got.values() for row in rows] == [3, 3, 3]


def test_vs_none_pairs_each_round_with_the_baselines_same_round() -> None:
    from benchmarks.scenarios_more import paired_ratio

    # the ratio of the medians would read 250 / 200 = 1.25; each round's pair says 0.9 in the middle
    assert paired_ratio([250.0, 90.0, 270.0], [100.0, 200.0, 300.0]) == 0.9
    assert paired_ratio([10.0], [0.0]) is None


def test_instruction_totals_are_read_from_a_callgrind_dump(tmp_path: Path) -> None:
    from benchmarks.instructions import _total

    dump = tmp_path / "callgrind.out.1"
    dump.write_text("# callgrind format\nversion: 1\nevents: Ir\nfn=(1) main\n0 10\nsummary: 4711\ntotals: 4711\n")
    assert _total(dump) == 4711
    # counting switched off before the dump: the summary line reads 0, the totals line counts
    dump.write_text("events: Ir\nfn=(1) main\n0 10\nsummary: 0\ntotals: 4711\n")
    assert _total(dump) == 4711
    (tmp_path / "empty").write_text("events: Ir\n")
    with pytest.raises(RuntimeError, match="no totals"):
        _total(tmp_path / "empty")


def test_opcode_counts_name_the_functions_each_request_runs(tmp_path: Path) -> None:
    """A real gateway under the bytecode tracer: every request builds its context once, and
    the admin set runs the admission path that the baseline does not."""
    from benchmarks.opcodes import count

    none_ops, none_calls = count(feat.BASELINE, 60, tmp_path / "none")
    admin_ops, admin_calls = count(feat.ADMIN_ONLY, 60, tmp_path / "admin")
    assert none_calls["gateway/handlers.py:_context"] == pytest.approx(1.0, abs=0.05)
    assert admin_calls["admin/admission.py:settle"] == pytest.approx(1.0, abs=0.05)
    assert "admin/admission.py:settle" not in none_ops
    assert sum(admin_ops.values()) > sum(none_ops.values()) > 1000  # bytecodes per request


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (python -m benchmarks setup)")
def test_cache_hit_speed_measures_hit_miss_and_the_aiohttp_floor() -> None:
    from benchmarks.cache_hit_speed import run

    result = run(seconds=1, connections=4)
    assert result["hit_check"] == "hit-exact"
    for phase in ("hit", "miss", "floor"):
        assert result[phase]["requests_per_s"] > 0 and result[phase]["non_2xx"] == 0
    assert result["floor_over_miss"] > 0 and result["hit_over_floor_cost"] > 0
