"""API keys: which role a presented Bearer key has, compared in constant time."""

from __future__ import annotations

import hmac

CLIENT, ADMIN = "client", "admin"


class KeyRing:
    """Which role a presented key has. Keys are never logged; clients are named by a short digest."""

    def __init__(self, client_keys: list[str], admin_keys: list[str]):
        self._client = [k.encode() for k in client_keys]
        self._admin = [k.encode() for k in admin_keys]
        self.enabled = bool(client_keys or admin_keys)

    def role(self, authorization: str | None) -> str | None:
        """``admin``, ``client`` or None for a missing or wrong key (an admin key is also a client key)."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        presented = authorization[7:].strip().encode()
        # compare_digest against every key, no early exit: timing says nothing about which key matched.
        admin = any([hmac.compare_digest(presented, k) for k in self._admin])
        client = any([hmac.compare_digest(presented, k) for k in self._client])
        return ADMIN if admin else CLIENT if client else None
