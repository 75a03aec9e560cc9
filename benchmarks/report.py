"""Results: results.json (everything), results.md (tables), PNG charts (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def write_all(out: Path, results: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (out / "results.md").write_text(markdown(results))
    return [out / "results.json", out / "results.md", *charts(out, results)]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(r: dict[str, Any]) -> str:
    meta = r["meta"]
    parts = [f"# Turnout benchmark {meta['started']}\n",
             f"Machine: {meta['cpus']} CPUs ({meta['cpu_model']}); gateway on CPU {meta['sut_cpus']}, "
             f"mock + wrk on CPU {meta['load_cpus']}; {meta['seconds']} s per point; mode {meta['mode']}.\n"]
    s = r["scenarios"]
    if "overhead" in s:
        o = s["overhead"]
        parts.append(f"## Overhead (Turnout features: {o['features']})\n")
        parts.append(_table(
            ["upstream ms", "conc.", "mock req/s", "turnout req/s", "ratio", "mock p50", "turnout p50", "added p50",
             "added p99"],
            [[x["upstream_ms"], x["connections"], x["direct"]["rps"], x["turnout"]["rps"], x["rps_ratio"],
              x["direct"]["p50_ms"], x["turnout"]["p50_ms"], x["added_p50_ms"], x["added_p99_ms"]] for x in o["rows"]]))
        parts.append(f"\nTurnout RSS (MiB): {o['turnout_rss_mb']}\n")
    if "streaming" in s:
        st = s["streaming"]
        t = st["ttft"]
        parts.append("## Streaming\n")
        parts.append(f"TTFT p50: direct {t['direct']['ttft_p50_ms']} ms, Turnout {t['turnout']['ttft_p50_ms']} ms, "
                     f"added **{t['added_ttft_p50_ms']} ms** ({t['turnout']['samples']} streams, upstream first "
                     f"token {st['first_token_ms']} ms).\n\nStream throughput at 64 connections: direct "
                     f"{st['throughput']['direct']['rps']} streams/s, Turnout {st['throughput']['turnout']['rps']} "
                     f"streams/s (ratio {st['throughput']['rps_ratio']}, {st['tokens_per_stream']} tokens each).\n")
    parts += _more_sections(s)
    parts.append("\n## Versions and flags\n")
    parts.append(_table(["service", "version", "flags"],
                        [[k, v["version"], "`" + " ".join(v["flags"]) + "`"] for k, v in r["services"].items()]))
    return "\n".join(parts)


def _more_sections(s: dict[str, Any]) -> list[str]:
    parts = []
    if "cache" in s:
        c = s["cache"]
        parts.append("## Cache-hit path\n")
        parts.append(f"Identical requests, upstream {c['upstream_ms']} ms: mock {c['direct']['rps']} req/s "
                     f"(p50 {c['direct']['p50_ms']} ms), Turnout {c['turnout']['rps']} req/s (p50 "
                     f"{c['turnout']['p50_ms']} ms); hit ratio {c['hit_ratio']}.\n")
    if "failover" in s:
        f = s["failover"]
        parts.append("## Failover\n")
        parts.append(f"One of two deployments SIGKILLed at {f['kill_at_s']} s: {f['result']['requests']} requests, "
                     f"{f['client_errors']} client-visible errors, {f['retries']:g} retries "
                     f"({f['failed_attempts_on_killed']:g} failed attempts on the killed one), p99 "
                     f"{f['result']['p99_ms']} ms, {f['result']['rps']} req/s.\n")
    if "features" in s:
        parts.append("## Features on/off (0 ms upstream)\n")
        header = ["features", "conc.", "req/s", "vs none", "vs none, shared core", "p50 ms", "added p50 vs none",
                  "p99 ms", "RSS MiB"]
        parts.append(_table(header,
                            [[x["features"], x["connections"], x["rps"], x["rps_vs_none"],
                              x.get("rps_vs_none_shared", ""), x["p50_ms"], x["added_p50_vs_none_ms"], x["p99_ms"],
                              x["rss_mb"]] for x in s["features"]["rows"]]))
        parts.append("\n\"vs none\": median over the interleaved rounds of the ratio to the baseline's req/s in "
                     "the same round. \"shared core\": each set and the baseline "
                     "loaded at the same time on the same CPU, median of the per-round ratios "
                     "(benchmarks/shared_core.py; the steadier of the two on a noisy machine).\n")
    if "peers" in s:
        p = s["peers"]
        parts.append("## Peers (same mock, same CPU, same run)\n")
        rows = [[name, r["connections"], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]]
                for name, rs in p["rows"].items() for r in rs]
        parts.append(_table(["gateway", "conc.", "req/s", "p50 ms", "p99 ms", "errors"], rows))
        parts.append("\n" + _table(["conc.", "Turnout/Portkey req/s", "Turnout/LiteLLM req/s"],
                                   [[x["connections"], x["turnout_vs_portkey_rps"], x["turnout_vs_litellm_rps"]]
                                    for x in p["ratios"]]))
        parts.append("\n" + _table(["gateway", "stream TTFT p50 ms", "failed streams", "RSS MiB"],
                                   [[k, v["ttft_p50_ms"] if v["samples"] else "failed", v["errors"],
                                     p["rss_mb"].get(k, "")] for k, v in p["stream_ttft"].items()]))
    return parts


def charts(out: Path, r: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    s = r["scenarios"]
    if "overhead" in s:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for ms in sorted({x["upstream_ms"] for x in s["overhead"]["rows"]}):
            rows = [x for x in s["overhead"]["rows"] if x["upstream_ms"] == ms]
            cs = [x["connections"] for x in rows]
            ax1.plot(cs, [x["added_p50_ms"] for x in rows], marker="o", label=f"added p50, {ms:g} ms upstream")
            ax1.plot(cs, [x["added_p99_ms"] for x in rows], marker="x", ls="--", label=f"added p99, {ms:g} ms")
            ax2.plot(cs, [x["turnout"]["rps"] for x in rows], marker="o", label=f"Turnout, {ms:g} ms")
            ax2.plot(cs, [x["direct"]["rps"] for x in rows], marker="x", ls="--", label=f"mock direct, {ms:g} ms")
        for ax, title in ((ax1, "Added latency (ms)"), (ax2, "Requests/s")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency")
            ax.set_title(title)
            ax.legend(fontsize=7)
        made.append(_save(fig, out / "overhead.png"))
    if "peers" in s:
        made.append(_bars(plt, out / "peers.png", "req/s by gateway (0 ms upstream)",
                          {f"{n}\nc={x['connections']}": x["rps"] for n, rs in s["peers"]["rows"].items() for x in rs}))
    if "features" in s:
        made.append(_bars(plt, out / "features.png", "req/s by feature set",
                          {f"{x['features'][:22]}\nc={x['connections']}": x["rps"] for x in s["features"]["rows"]}))
    return made


def _bars(plt: Any, path: Path, title: str, values: dict[str, float]) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, len(values) * 1.1), 4))
    ax.bar(list(values), list(values.values()), color="#4477aa")
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=7)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
