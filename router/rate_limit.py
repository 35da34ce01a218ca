"""Per-client token-bucket rate limits (a client is named by its API key's digest)."""

from __future__ import annotations

import math
import time


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
