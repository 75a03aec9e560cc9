"""Interleaved measurement: on a shared machine, neighbours' load drifts over seconds, so every
target is measured once per round, in turn, and the report keeps the median of the rounds.
Targets that are idle between their turns cost nothing (all are started before the first round)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from benchmarks.load import LoadResult
from benchmarks.procs import Service

if TYPE_CHECKING:
    from benchmarks.scenarios import Run

Target = tuple[str, Service, dict[str, str]]


def median_row(results: list[LoadResult]) -> dict[str, Any]:
    first = results[0].as_dict()
    row: dict[str, Any] = {**first, "rounds": len(results), "requests": sum(r.requests for r in results),
                           "errors": sum(r.errors for r in results), "rps_rounds": [r.rps for r in results]}
    for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms"):
        row[key] = round(statistics.median(getattr(r, key) for r in results), 3)
    return row


def measure(run: Run, targets: list[Target], body: bytes, concurrencies: list[int],
            rounds: int) -> dict[str, list[dict[str, Any]]]:
    """name → one median row per concurrency (in the order given). Every other round takes the
    targets in reverse order, so a machine that speeds up or slows down during a round does not
    always favour the same end of the list."""
    samples: dict[str, dict[int, list[LoadResult]]] = {name: {c: [] for c in concurrencies} for name, _, _ in targets}
    for n in range(rounds):
        run.log(f" round {n + 1}/{rounds}")
        for c in concurrencies:
            for name, svc, headers in (targets if n % 2 == 0 else targets[::-1]):
                samples[name][c].append(run.wrk(name, svc, body, c, headers))
    return {name: [median_row(samples[name][c]) for c in concurrencies] for name, _, _ in targets}
