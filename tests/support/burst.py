"""Many concurrent HTTP requests from a background thread (its own asyncio loop), for queue and fair-share tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx


@dataclass
class Outcome:
    """One request's fate: its status (0: no answer) and when it ended (time.monotonic)."""

    index: int
    status: int
    ended: float
    seconds: float


class Burst:
    """POST ``bodies`` to ``url`` all at once (one keep-alive connection each), in a thread, ``rounds`` times (the
    next ``gap_s`` after all are answered, on the same connections); ``result()`` waits for all."""

    def __init__(self, url: str, bodies: Sequence[dict], headers: dict[str, str] | None = None,
                 timeout_s: float = 60.0, rounds: int = 1, gap_s: float = 0.0):
        self.url, self.bodies, self.headers, self.timeout_s = url, list(bodies), headers or {}, timeout_s
        self.rounds, self.gap_s = rounds, gap_s
        self.outcomes: list[Outcome] = []
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout_s, headers=self.headers) as client:
            for r in range(self.rounds):
                if r:
                    await asyncio.sleep(self.gap_s)
                n = len(self.bodies)
                await asyncio.gather(*(self._one(client, r * n + i, body) for i, body in enumerate(self.bodies)))

    async def _one(self, client: httpx.AsyncClient, index: int, body: dict) -> None:
        t0 = time.monotonic()
        try:
            status = (await client.post(self.url, json=body)).status_code
        except httpx.HTTPError:
            status = 0
        now = time.monotonic()
        self.outcomes.append(Outcome(index, status, now, now - t0))

    def done(self) -> int:
        """Requests answered so far."""
        return len(self.outcomes)

    def result(self, timeout_s: float = 120.0) -> list[Outcome]:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"{self.rounds} bursts of {len(self.bodies)} did not end in {timeout_s}s"
        return sorted(self.outcomes, key=lambda o: o.index)
