"""Turnout's admin layer: tenants, API keys, rate limits, budgets, metering, the admin API.

The gateway reaches it only through ``admin.plugin.setup(app, cfg)`` (imported by name when
the config has an ``admin:`` section); ``admin.cli.main(argv)`` is ``turnout admin``. This
package root exports the value types only, so importing it stays cheap.
"""

from admin.errors import AdminError, Conflict, InvalidRequest, NotFound
from admin.models import ApiKey, Limits, Tenant, UsageEvent

__all__ = [
    "AdminError",
    "ApiKey",
    "Conflict",
    "InvalidRequest",
    "Limits",
    "NotFound",
    "Tenant",
    "UsageEvent",
]
