"""Semantic-cache evaluation on labelled question pairs.

    python -m benchmarks.cache_eval --pairs PATH [--mode pairs|gptcache] [--threshold T]
        [--skip N] [--limit N] [--plot out.png] [--embedder static|minilm] [--no-verifier]

Input: JSONL rows ``{"text_a", "text_b", "label"}``.
- ``pairs`` (default): each pair in its own scope; store an answer under ``text_a``, look up
  ``text_b``. precision = served hits with label 1 / hits; recall = served label-1 pairs /
  label-1 pairs; false_hit_rate = served label-0 / lookups.
- ``gptcache``: store every ``text_a`` in one scope first, then look up each ``text_b``; a hit
  on its own pair is correct, on another entry wrong, else a miss.
The real cache code path is used (BatchingEmbedder -> faiss index -> verifier). Thresholds
apply to the verifier score (the cosine when ``--no-verifier``). Progress goes to stderr; the
last stdout line is one JSON object for the chosen operating point (``--threshold`` or the
configured default), with the sweep under ``"sweep"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cache.batcher import BatchingEmbedder
from cache.build import freeze_startup_objects, load_embedder
from cache.embedders import StaticEmbedder
from cache.index import SemanticIndex
from cache.semantic import SemanticCache
from cache.stores import MemoryStore
from cache.verifier import Verifier
from configs.cache import SemanticConfig

CONCURRENT: dict[str, Any] = {}
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True, slots=True)
class Probe:
    label: int
    score: float  # -1 when no candidate
    own: bool  # candidate is the row's own text_a
    latency_ms: float


def _load(path: Path, skip: int, limit: int | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[skip: None if limit is None else skip + limit]


async def _run(rows: list[dict[str, Any]], mode: str, args: argparse.Namespace) -> list[Probe]:
    embedder = load_embedder(args.embedder)
    batcher = BatchingEmbedder(embedder)
    index = SemanticIndex(batcher.dim, max(1, len(rows)) * 2)
    static = embedder if isinstance(embedder, StaticEmbedder) else None
    sem = SemanticCache(MemoryStore(1 << 30), batcher, index,
                        None if args.no_verifier else Verifier.load(static, memo_size=args.verifier_memo),
                        args.min_similarity,
                        lookup_batch=args.lookup_batch)
    freeze_startup_objects()  # as build_cache does at gateway start
    keys = []
    for i, row in enumerate(rows):
        scope = "eval" if mode == "gptcache" else f"p{i}"
        keys.append(await sem.put(scope, row["text_a"], b"{}", 3600.0))
        if i % 5000 == 0:
            sys.stderr.write(f"stored {i}/{len(rows)}\n")
    probes = []
    for i, row in enumerate(rows):
        scope = "eval" if mode == "gptcache" else f"p{i}"
        start = time.perf_counter()
        cand = await sem.probe(scope, row["text_b"])
        ms = (time.perf_counter() - start) * 1000
        probes.append(Probe(int(row["label"]), -1.0 if cand is None else cand.score,
                            cand is not None and cand.entry.key == keys[i], ms))
        if i % 5000 == 0:
            sys.stderr.write(f"looked up {i}/{len(rows)}\n")
    if args.concurrency > 1:
        await _concurrent_latency(sem, rows, mode, args.concurrency)
    await batcher.aclose()
    return probes


async def _lag_monitor(samples: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.001)
        samples.append((loop.time() - start - 0.001) * 1000)


async def _concurrent_latency(sem: SemanticCache, rows: list[dict[str, Any]], mode: str, n: int) -> None:
    """Lookups of unseen texts (no memo) in waves of ``n`` concurrent callers, with the event
    loop's lag sampled meanwhile. Written to stderr and kept for the JSON result."""
    lat: list[float] = []
    lag: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    pool = sem.embedder.pool
    worker0 = await loop.run_in_executor(pool, time.thread_time)
    loop0, process0 = time.thread_time(), time.process_time()
    monitor = loop.create_task(_lag_monitor(lag, stop))

    async def one(i: int) -> None:
        scope = "eval" if mode == "gptcache" else f"p{i}"
        start = time.perf_counter()
        await sem.probe(scope, rows[i]["text_b"] + " ?")
        lat.append((time.perf_counter() - start) * 1000)

    for wave in range(0, min(len(rows), 64 * n), n):
        await asyncio.gather(*(one(i) for i in range(wave, min(len(rows), wave + n))))
    stop.set()
    await monitor
    # The worker is the pool's only thread: its CPU clock read there before and after the
    # waves is the CPU every lookup step cost, independent of how busy the VM is.
    loop_us = (time.thread_time() - loop0) * 1e6 / len(lat)
    process_us = (time.process_time() - process0) * 1e6 / len(lat)
    worker_us = (await loop.run_in_executor(pool, time.thread_time) - worker0) * 1e6 / len(lat)
    CONCURRENT.update(
        concurrency=n, concurrent_lookup_p50_ms=round(float(np.percentile(lat, 50)), 3),
        concurrent_lookup_p99_ms=round(float(np.percentile(lat, 99)), 3),
        loop_lag_p50_ms=round(float(np.percentile(lag, 50)), 3) if lag else 0.0,
        loop_lag_max_ms=round(float(max(lag)), 3) if lag else 0.0,
        worker_cpu_us_per_lookup=round(worker_us, 1), loop_cpu_us_per_lookup=round(loop_us, 1),
        process_cpu_us_per_lookup=round(process_us, 1),
    )
    sys.stderr.write(json.dumps(CONCURRENT) + "\n")


def metrics_at(probes: list[Probe], threshold: float, mode: str) -> dict[str, Any]:
    n = len(probes)
    hits = [p for p in probes if p.score >= threshold]
    positives = sum(p.label for p in probes)
    if mode == "gptcache":
        correct = sum(p.own for p in hits)
    else:
        correct = sum(p.label for p in hits)
    wrong = len(hits) - correct
    precision = correct / len(hits) if hits else 1.0
    recall = correct / (positives if mode == "pairs" else n) if n else 0.0
    out: dict[str, Any] = {
        "threshold": threshold, "precision": round(precision, 4), "recall": round(recall, 4),
        "hit_rate": round(len(hits) / n, 4) if n else 0.0,
        "false_hit_rate": round(wrong / n, 4) if n else 0.0,
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
    }
    if mode == "gptcache":
        out.update(correct_hits=correct, wrong_hits=wrong, misses=n - len(hits))
    return out


def _plot(sweep: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([s["recall"] for s in sweep], [s["precision"] for s in sweep], marker="o")
    for s in sweep:
        ax.annotate(f'{s["threshold"]:g}', (s["recall"], s["precision"]), fontsize=7)
    ax.axhline(0.9, linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    defaults = SemanticConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, type=Path)
    ap.add_argument("--mode", choices=("pairs", "gptcache"), default="pairs")
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--min-similarity", type=float, default=defaults.min_similarity)
    ap.add_argument("--embedder", choices=("static", "minilm"), default=defaults.embedder)
    ap.add_argument("--no-verifier", action="store_true")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N rows (e.g. the training part)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=32, help="callers for the latency run (1: skip)")
    ap.add_argument("--lookup-batch", type=int, default=defaults.lookup_batch, help="lookups per worker step")
    ap.add_argument("--verifier-memo", type=int, default=defaults.verifier_memo,
                    help="cached questions kept prepared for the verifier")
    ap.add_argument("--plot", type=Path, default=Path("cache_eval.png"))
    args = ap.parse_args(argv)
    rows = _load(args.pairs, args.skip, args.limit)
    probes = asyncio.run(_run(rows, args.mode, args))
    sweep = [metrics_at(probes, t, args.mode) for t in SWEEP]
    _plot(sweep, args.plot, f"{args.pairs.name} ({args.mode}, {len(rows)} rows)")
    for s in sweep:
        sys.stderr.write(json.dumps(s) + "\n")
    threshold = args.threshold if args.threshold is not None else (
        args.min_similarity if args.no_verifier else defaults.threshold)
    result = metrics_at(probes, threshold, args.mode)
    lat = np.array([p.latency_ms for p in probes])
    result.update(lookup_p50_ms=round(float(np.percentile(lat, 50)), 3),
                  lookup_p99_ms=round(float(np.percentile(lat, 99)), 3), rows=len(rows),
                  mode=args.mode, plot=str(args.plot), **CONCURRENT, sweep=sweep)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
