"""Graceful shutdown of one server replica: stop looking ready, then stop taking connections, then let the
requests in flight finish.

On SIGTERM (or SIGINT) ``/ready`` answers 503 at once, which takes the replica out of every router that probes it,
while it keeps serving for ``shutdown_delay_s``: requests a router sent before it noticed (or before its DNS
answer lost the replica) still land. Then uvicorn closes the listener and idle connections and waits up to
``shutdown_timeout_s`` for the requests in flight, a judge call that takes minutes included, before it cancels
them. A second signal skips what is left of the delay; after that uvicorn's own rule holds (a second Ctrl-C
quits at once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

log = logging.getLogger("genrm.server")


class GracefulServer(uvicorn.Server):
    """uvicorn's server with a not-ready delay before its own graceful shutdown."""

    def __init__(self, config: uvicorn.Config, *, delay_s: float, on_draining: Callable[[], None],
                 serving: Callable[[], bool]):
        super().__init__(config)
        self.delay_s = delay_s
        self.on_draining = on_draining  # makes /ready answer 503
        self.serving = serving  # False while the model loads: nobody routes to it yet, so no delay
        self.drain_until: float | None = None
        self._pending: int | None = None  # the signal that started the delay, handed to uvicorn when it ends
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set flags only (logging here could deadlock on a lock the interrupted code holds).
        self.on_draining()
        if self.drain_until is None and self.delay_s > 0 and not self.should_exit and self.serving():
            self.drain_until = time.monotonic() + self.delay_s
            self._pending = sig
            return
        self._pending = None
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and not self._announced:
            self._announced = True
            log.info("stop signal: /ready answers 503; serving %.0f s more, then the requests in flight get up to "
                     "%.0f s", self.delay_s, self.config.timeout_graceful_shutdown or 0)
        if self._pending is not None and time.monotonic() >= (self.drain_until or 0):
            sig, self._pending = self._pending, None
            super().handle_exit(sig, None)
        return await super().on_tick(counter)
