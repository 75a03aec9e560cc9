"""Admin-layer exceptions. The admin API maps them to HTTP (api.py); the request path only
ever sees ``gateway.errors`` classes raised by auth.py and admission.py."""

from __future__ import annotations


class AdminError(Exception):
    status = 500


class NotFound(AdminError):
    status = 404


class Conflict(AdminError):
    status = 409


class InvalidRequest(AdminError):
    status = 400
