"""API key material: generation, hashing, parsing.

A key looks like ``tk-<id>-<secret>``: ``id`` (10 hex chars) is public, names the key in lists
and logs and is the lookup handle; ``secret`` is 256 random bits. Only SHA-256 of the whole key
is stored, and a presented key is checked against it with a constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "tk-"


def new_key() -> tuple[str, str]:
    """(key id, full key). The full key is shown once and never stored."""
    key_id = secrets.token_hex(5)
    return key_id, f"{PREFIX}{key_id}-{secrets.token_urlsafe(32)}"


def hash_key(full_key: str) -> str:
    return hashlib.sha256(full_key.encode()).hexdigest()


def key_id_of(full_key: str) -> str | None:
    """The public id of a well-formed key, else None (no lookup is attempted)."""
    if not full_key.startswith(PREFIX):
        return None
    key_id, sep, secret = full_key[len(PREFIX):].partition("-")
    if not sep or len(key_id) != 10 or len(secret) < 16:
        return None
    return key_id


def matches(full_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(full_key), stored_hash)


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)
