"""Per-worker circuit breaker: closed → open after consecutive failures → half-open trial → closed.

Open periods grow exponentially (``base × 2^(opens-1)``, capped) so a flapping worker is tried less
and less often; one success in half-open closes the breaker and resets the back-off.
"""

from __future__ import annotations

import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the gauge's encoding


class CircuitBreaker:
    __slots__ = ("_state", "base_s", "failures", "max_s", "open_for", "opened_at", "opens", "threshold", "trial")

    def __init__(self, threshold: int = 3, base_s: float = 1.0, max_s: float = 60.0):
        self.threshold, self.base_s, self.max_s = threshold, base_s, max_s
        self.failures = 0  # consecutive
        self.opens = 0  # consecutive openings without a success in between
        self.opened_at = 0.0
        self.open_for = 0.0
        self.trial = False  # a half-open trial request is out
        self._state = CLOSED

    @property
    def state(self) -> str:
        if self._state == OPEN and time.monotonic() - self.opened_at >= self.open_for:
            self._state = HALF_OPEN
        return self._state

    def allows(self) -> bool:
        """May a request go to this worker now? Half-open admits one trial at a time."""
        if self._state == CLOSED:
            return True
        return self.state == HALF_OPEN and not self.trial

    def on_attempt(self) -> None:
        if self._state == HALF_OPEN:
            self.trial = True

    def on_success(self) -> None:
        self.failures = self.opens = 0
        self.trial = False
        self._state = CLOSED

    def on_failure(self) -> bool:
        """Count a failure; return True when this one opened (or re-opened) the breaker."""
        self.failures += 1
        self.trial = False
        if self._state == HALF_OPEN or (self._state == CLOSED and self.failures >= self.threshold):
            self.opens += 1
            self.open_for = min(self.base_s * 2 ** (self.opens - 1), self.max_s)
            self.opened_at = time.monotonic()
            self._state = OPEN
            return True
        return False
