"""Admin value types: limits, tenants, API keys, usage events.

Money is integer nano-USD (1e-9 USD) everywhere inside admin: sums are exact in SQL and in
Redis ``INCRBY``; the API converts to and from USD floats at its edge.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

BudgetPeriod = Literal["day", "month"]
NANO = 1_000_000_000


def usd_to_nano(usd: float) -> int:
    return round(usd * NANO)


def nano_to_usd(nano: int) -> float:
    return nano / NANO


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one scope (a tenant or a key). ``None`` means unlimited / every model."""

    models: frozenset[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "month"
    soft_alert: float = 0.8  # fraction of the budget that raises an alert once per period

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "concurrency"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or null")
        if self.budget_usd is not None and self.budget_usd < 0:
            raise ValueError("budget_usd must be >= 0 or null")
        if self.budget_period not in ("day", "month"):
            raise ValueError("budget_period must be 'day' or 'month'")
        if not 0 < self.soft_alert <= 1:
            raise ValueError("soft_alert must be in (0, 1]")

    @property
    def limited(self) -> bool:
        """Whether any counter applies (model lists are checked by the gateway, not counted)."""
        # Plain checks, no tuple or generator: this runs for every scope of every request.
        return (self.rpm is not None or self.tpm is not None or self.concurrency is not None
                or self.budget_usd is not None)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["models"] = sorted(self.models) if self.models is not None else None
        return out

    @classmethod
    def from_json(cls, raw: object) -> Limits:
        """Strict: unknown fields and wrong types raise ValueError (the API answers 400)."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError("limits must be an object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown limit field(s): {', '.join(sorted(unknown))}")
        data = dict(raw)
        models = data.get("models")
        if models is not None:
            if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
                raise ValueError("models must be a list of strings or null")
            data["models"] = frozenset(models)
        if data.get("budget_usd") is not None:
            data["budget_usd"] = float(data["budget_usd"])
        if "soft_alert" in data:
            data["soft_alert"] = float(data["soft_alert"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: never the secret, only its SHA-256 hex digest."""

    id: str  # the public prefix, shown in lists and logs
    tenant_id: str
    hash: str
    name: str = ""
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    replaced_by: str | None = None

    def usable(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "tenant_id": self.tenant_id, "name": self.name,
            "limits": self.limits.to_json(), "created_at": self.created_at,
            "expires_at": self.expires_at, "revoked_at": self.revoked_at,
            "replaced_by": self.replaced_by,
        }


class UsageEvent(NamedTuple):
    """One settled request, as releases before 2026-12-04 queued and spilled it. Kept to replay
    their spill files: ``admin.usage_rollup`` folds a batch of them into daily totals under the
    id those releases gave the batch (a digest of the event ids). Usage is now filed straight
    into totals (``admin.usage``)."""

    id: str
    ts: float
    request_id: str
    tenant_id: str
    key_id: str | None
    model: str
    deployment: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_nusd: int
    status: int
    latency_ms: int
    cached: bool = False
    stream: bool = False

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> UsageEvent:
        return cls(**raw)
