"""The ``admin:`` section. Present means auth is on (see README: which routes are public)."""

from __future__ import annotations

from dataclasses import dataclass

from configs.reader import Reader


@dataclass(frozen=True, slots=True)
class AdminConfig:
    database: str = "sqlite:///turnout.db"
    admin_key: str | None = None


def parse_admin(r: Reader | None) -> AdminConfig | None:
    if r is None:
        return None
    cfg = AdminConfig(
        database=r.str("database", "sqlite:///turnout.db"),
        admin_key=r.str("admin_key", None),
    )
    r.finish()
    return cfg
