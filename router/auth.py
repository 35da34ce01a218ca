"""API keys (Bearer, compared in constant time) and per-key token-bucket rate limits."""

from __future__ import annotations

import hmac
import math
import time

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


class RateLimiter:
    """One token bucket per client identity: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, max_clients: int = 100_000):
        self.rate = rate
        self.burst = float(burst or max(1, math.ceil(rate)))
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, last refill)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, identity: str) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        tokens, last = self._buckets.get(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            if len(self._buckets) >= self.max_clients and identity not in self._buckets:
                self._buckets.clear()  # bounded memory under a key-guessing flood; buckets refill anyway
            self._buckets[identity] = (tokens - 1, now)
            return 0.0
        self._buckets[identity] = (tokens, now)
        return (1 - tokens) / self.rate
