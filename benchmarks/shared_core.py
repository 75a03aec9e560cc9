"""Cost ratios measured on one shared core: two gateways loaded at the same time.

On this VM a target's req/s moves by up to 2x between the seconds it is measured in, so the
ratio of two interleaved medians can still swing by tens of percent. Here the baseline and the
target are pinned to the same CPU (as every Turnout in a run is) and driven by two wrk
processes at once, closed loop, so both stay CPU-bound; the scheduler splits the core evenly,
so each one's req/s is (its CPU share) / (its CPU cost per request) and their ratio is the
ratio of per-request costs, with the machine's drift common to both. It is the ratio each
would do alone on the same core provided the load CPUs keep both saturated; ``shared_total_rps``
(the two together) should then be close to the baseline's req/s alone.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from benchmarks.load import LoadResult

if TYPE_CHECKING:
    from benchmarks.interleave import Target
    from benchmarks.scenarios import Run


def _together(run: Run, pair: tuple[Target, Target], body: bytes, connections: int) -> list[LoadResult]:
    """Both loads at once; a failed one re-raises its own error here."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(run.wrk, f"{name[:20]} (shared)", svc, body, connections, headers)
                for name, svc, headers in pair]
        return [done.result() for done in runs]


def shared_ratios(run: Run, base: Target, others: list[Target], body: bytes, connections: int,
                  rounds: int) -> dict[str, dict[str, Any]]:
    """name → median over rounds of (target req/s / baseline req/s) measured together, the
    per-round ratios, and the median of the pair's summed req/s. Every other round takes the
    targets in reverse order: an A/B of two builds, each paired with the baseline in turn, read
    ~2% better for whichever build went second, whichever that was."""
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in others}
    totals: dict[str, list[float]] = {name: [] for name, _, _ in others}
    for n in range(rounds):
        run.log(f" shared-core round {n + 1}/{rounds}")
        for target in others if n % 2 == 0 else others[::-1]:  # no target always goes first
            first, second = _together(run, (base, target), body, connections)
            if first.rps:
                ratios[target[0]].append(second.rps / first.rps)
            totals[target[0]].append(first.rps + second.rps)
    return {name: {"rps_vs_none_shared": round(statistics.median(r), 3) if r else None,
                   "shared_rounds": [round(x, 3) for x in r],
                   "shared_total_rps": round(statistics.median(totals[name]))}
            for name, r in ratios.items()}
