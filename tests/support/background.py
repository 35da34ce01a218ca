"""A blocking HTTP request run in a thread, so a test can act while it is in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx


class Background:
    """A request run in a thread; ``result()`` gives (response, seconds it took)."""

    def __init__(self, fn: Callable[[], httpx.Response]):
        self._fn = fn
        self._out: tuple[httpx.Response, float] | None = None
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            resp = self._fn()
            self._out = (resp, time.monotonic() - t0)
        except BaseException as exc:  # handed to the test thread by result()
            self._exc = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout_s: float = 30.0) -> tuple[httpx.Response, float]:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "background request did not finish"
        if self._exc is not None:
            raise self._exc
        assert self._out is not None
        return self._out
