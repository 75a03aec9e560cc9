from __future__ import annotations

import admin


def test_public_surface_is_pinned() -> None:
    assert sorted(admin.__all__) == [
        "AdminError", "ApiKey", "Conflict", "InvalidRequest", "Limits", "NotFound", "Tenant", "UsageEvent",
    ]
    assert callable(__import__("admin.plugin", fromlist=["setup"]).setup)
    assert callable(__import__("admin.cli", fromlist=["main"]).main)
