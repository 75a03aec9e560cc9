"""Each tenant's budget use as ``turnout_budget_used_ratio`` (the "budget nearly spent" alert).

Off the request path: a task reads the quota store (live reservations and settled spend, the
same numbers as the admin API's budget endpoint) every ``interval`` seconds and sets the gauge
through the callback the gateway's metrics recorder provides. Failures are logged and retried on
the next tick; they never reach a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from admin.api import budget_status
from admin.quota import Scope
from admin.state import AdminState

log = logging.getLogger("turnout.admin.budget")
EXPORT_INTERVAL_S = 15.0
SetRatio = Callable[[str, float], None]


async def export_budgets(state: AdminState, set_ratio: SetRatio) -> int:
    """Set the ratio for every tenant with a budget; returns how many were exported."""
    count = 0
    for tenant in await state.store.tenants():
        budget = tenant.limits.budget_usd
        if not budget:
            continue
        status = await budget_status(state, Scope(f"t:{tenant.id}", tenant.limits))
        set_ratio(tenant.id, status["spent_usd"] / budget)
        count += 1
    return count


async def run_budget_export(state: AdminState, set_ratio: SetRatio, interval: float = EXPORT_INTERVAL_S) -> None:
    while True:
        try:
            await export_budgets(state, set_ratio)
        except Exception:  # the store may be down for a while; the next tick retries
            log.warning("budget export failed", exc_info=True)
        await asyncio.sleep(interval)
