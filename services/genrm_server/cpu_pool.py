"""A process pool for CPU-heavy checks (symbolic math) so they never block the event loop or hold the GIL.

Workers are started with ``spawn``: forking a process that already runs torch and compute threads is unsafe.
The pool is created on first use, so servers that never need it pay nothing. A worker that dies (a crash in a C
extension, the OOM killer) fails the calls it held with ``BrokenProcessPool``; the next call gets a fresh pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")


class CpuPool:
    def __init__(self, workers: int | None = None):
        self.workers = workers or max(1, os.cpu_count() or 1)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        """Run ``fn(*args)`` in a worker; ``TimeoutError`` past ``timeout_s`` (the caller decides the result)."""
        pool = self._executor()
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, fn, *args), timeout_s)
        except BrokenProcessPool:
            if self._pool is pool:  # a broken executor refuses all later work: replace it on the next call
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
