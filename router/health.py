"""Active health checking: probe every worker's ``/ready``; only ready workers get traffic."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from router.workers import Worker, WorkerPool

log = logging.getLogger("genrm.router.health")


class HealthChecker:
    def __init__(self, pool: WorkerPool, client: aiohttp.ClientSession, interval_s: float, timeout_s: float):
        self.pool, self.client = pool, client
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._task: asyncio.Task | None = None

    async def probe(self, worker: Worker) -> bool:
        try:
            async with self.client.get(worker.url + "/ready",
                                       timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok != worker.ready:
            log.info("worker %s is %s", worker.url, "ready" if ok else "NOT ready")
        worker.ready = ok
        if ok:
            worker.mark_ok()
        return ok

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(w) for w in self.pool.workers))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.probe_all()

    async def start(self) -> None:
        await self.probe_all()
        self._task = asyncio.create_task(self._run(), name="genrm-router-health")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
