"""Daily usage totals as the store keeps them, and the batches that add to them.

A batch holds one row per (UTC day, tenant, key, model) it touches (usually one or a few),
written as multi-row upserts that add to the stored totals. A batch is applied at most once:
its id is recorded in ``usage_batches`` in the same transaction, so a retried write or a
replayed spill of the same batch changes nothing. The usage recorder folds requests into rows
as they finish (``admin.usage``); ``rollup`` folds the events of an older release's spill files
the same way, under the id that release gave their batch (``batch_id``, a digest of the event ids).

Statements come in power-of-two row counts (``chunks``): SQLite parses a statement once per
distinct text, and parsing one with thousands of numbered parameters is quadratic (~70 ms for
500 rows), so a statement per batch length would cost more than the writes themselves.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from admin.models import UsageEvent

MAX_CHUNK = 256  # rows per statement at most: 2,560 parameters, far under both engines' caps
COLUMNS = ("day", "tenant_id", "key_id", "model", "requests", "failed", "cached", "prompt_tokens",
           "completion_tokens", "cost_nusd")
SUMS = COLUMNS[4:]  # the summed columns
Total = tuple[str, str, str, str, int, int, int, int, int, int]  # a row in COLUMNS order


Group = tuple[str, str, str, str]  # day, tenant, key ('' for none), model
Member = tuple[int, int, int, int, bool]  # one request: prompt, completion, cost (nano-USD), status, cached
_PROMPT, _COMPLETION, _COST, _STATUS, _CACHED = map(operator.itemgetter, range(5))
_FAILED = (400).__le__  # status >= 400


def day_of(ts: float) -> str:
    """The UTC day of ``ts`` as the usage tables store it."""
    return day_of_index(int(ts // 86400))


@functools.lru_cache(maxsize=64)
def day_of_index(day: int) -> str:
    """The UTC day number ``day`` (days since the epoch) as the usage tables store it."""
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def totals(groups: Mapping[Group, list[Member]]) -> list[Total]:
    """One row per group, sorted by group: every writer then takes the rows' locks in the same
    order (two PostgreSQL replicas upserting the same groups in opposite orders could
    deadlock). A status of 400 or more counts as failed. The sums run in C (``map`` over
    field getters)."""
    return [(*group, len(ms), sum(map(_FAILED, map(_STATUS, ms))), sum(map(bool, map(_CACHED, ms))),
             sum(map(_PROMPT, ms)), sum(map(_COMPLETION, ms)), sum(map(_COST, ms)))
            for group, ms in sorted(groups.items())]


def rollup(events: Sequence[UsageEvent]) -> list[Total]:
    """Daily totals of an older release's events (its spill files); a keyless event counts
    under key ``''``."""
    groups: dict[Group, list[Member]] = {}
    for e in events:
        groups.setdefault((day_of(e.ts), e.tenant_id, e.key_id or "", e.model), []).append(
            (e.prompt_tokens, e.completion_tokens, e.cost_nusd, e.status, e.cached))
    return totals(groups)


class UsageBatch(NamedTuple):
    """Totals to add to the store at once, applied once by ``id``; ``rows`` sorted by group."""

    id: str
    rows: list[Total]
    requests: int

    @classmethod
    def of_events(cls, events: Sequence[UsageEvent]) -> UsageBatch:
        """The batch of an older release's spilled events, with the id that release gave it."""
        return cls(batch_id(events), rollup(events), len(events))


def batch_id(events: Sequence[UsageEvent]) -> str:
    """The same events in the same order always give the same id."""
    return hashlib.sha256("\n".join(e.id for e in events).encode()).hexdigest()[:40]


def chunks(n: int) -> list[int]:
    """``n`` rows as chunks of MAX_CHUNK, then the binary digits of the rest (e.g. 700 → 256,
    256, 128, 32, 16, 8, 4): at most 9 distinct statement sizes, whatever the batches."""
    full, rest = divmod(n, MAX_CHUNK)
    return [MAX_CHUNK] * full + [1 << b for b in range(rest.bit_length() - 1, -1, -1) if rest >> b & 1]


@functools.lru_cache(maxsize=16)
def upsert_sql(rows: int) -> str:
    """Add ``rows`` totals to ``usage_daily`` (same text for SQLite and PostgreSQL)."""
    width = len(COLUMNS)
    values = ", ".join(
        "(" + ", ".join(f"${r * width + k + 1}" for k in range(width)) + ")" for r in range(rows))
    adds = ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in SUMS)
    return (f"INSERT INTO usage_daily ({', '.join(COLUMNS)}) VALUES {values} "
            f"ON CONFLICT (day, tenant_id, key_id, model) DO UPDATE SET {adds}")
