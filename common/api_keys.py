"""API keys: which role a presented Bearer key has, compared in constant time, and which key it is (its id)."""

from __future__ import annotations

import hashlib
import hmac

CLIENT, ADMIN = "client", "admin"


def key_id(key: str) -> str:
    """A key's public name: ``key-`` + the first 8 hex digits of its SHA-256 (``printf %s "$KEY" | sha256sum``).

    Metrics labels and the ``key_weights`` setting name keys by it, so a key itself never leaves the KeyRing.
    """
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class KeyRing:
    """Which role a presented key has. Keys are never logged; clients are named by a short digest."""

    def __init__(self, client_keys: list[str], admin_keys: list[str]):
        self._client = [k.encode() for k in client_keys]
        self._admin = [k.encode() for k in admin_keys]
        self._ids = [key_id(k) for k in [*admin_keys, *client_keys]]  # in the order identify() compares
        self.enabled = bool(client_keys or admin_keys)

    @property
    def ids(self) -> list[str]:
        """The ids of every configured key (admin keys first), without repeats."""
        return list(dict.fromkeys(self._ids))

    def role(self, authorization: str | None) -> str | None:
        """``admin``, ``client`` or None for a missing or wrong key (an admin key is also a client key)."""
        return self.identify(authorization)[0]

    def identify(self, authorization: str | None) -> tuple[str | None, str | None]:
        """(role, key id) of a presented ``Authorization`` header; (None, None) for a missing or wrong key."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return None, None
        presented = authorization[7:].strip().encode()
        # compare_digest against every key, no early exit: timing says nothing about a key's bytes.
        matches = [hmac.compare_digest(presented, k) for k in (*self._admin, *self._client)]
        if not any(matches):
            return None, None
        index = matches.index(True)
        return (ADMIN if index < len(self._admin) else CLIENT), self._ids[index]
