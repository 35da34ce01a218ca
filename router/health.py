"""Active health checking: ``/health`` (alive) and ``/ready`` (may take traffic) on every worker.

A worker goes out after ``failure_threshold`` failed probes in a row and comes back after
``success_threshold`` passed ones. When it comes back, its models (``/v1/models``) and recipes
(``/v1/recipes``) are read again: that is what the model-aware pools route on. A probe that *times
out* means a hung worker (SIGSTOP, a wedged engine): its unanswered in-flight attempts are handed to
other workers at once instead of waiting out the request timeout.

Each probe also learns the worker's load (``common.load_report``): from the ``/ready`` answer's load report,
else, for a vLLM server that sent no report for a round, from its ``vllm:num_requests_*`` gauges (``/metrics``).
A replica that just started thus knows the load other replicas put on each worker before it places a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from common.load_report import HEADER, header_load, load_from_prometheus
from router.workers import Worker, WorkerPool
from trainer_client.transports import describe_failure

log = logging.getLogger("genrm.router.health")


class HealthChecker:
    def __init__(self, pool: WorkerPool, client: aiohttp.ClientSession, interval_s: float, timeout_s: float,
                 failure_threshold: int = 2, success_threshold: int = 1,
                 on_change: Callable[[Worker, bool, str], None] | None = None):
        self.pool, self.client = pool, client
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.failure_threshold, self.success_threshold = failure_threshold, success_threshold
        self.on_change = on_change
        self._task: asyncio.Task | None = None
        self._seen: set[Worker] = set()  # probed at least once (the first verdict needs no streak)

    async def _get(self, worker: Worker, path: str) -> tuple[int, object]:
        async with self.client.get(worker.url + path, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
            body = await resp.json(content_type=None) if resp.status == 200 else None
            report = resp.headers.get(HEADER) if path == "/ready" else None
            if report:
                worker.learn_load(*header_load(report.encode("latin-1")), asyncio.get_running_loop().time())
            return resp.status, body

    async def _read_gauges(self, worker: Worker) -> None:
        """A vLLM server's load from its gauges, when no report told it for a round (vLLM sends none itself)."""
        if asyncio.get_running_loop().time() - worker.load_at < self.interval_s / 2:  # its answers said it lately
            return
        try:
            async with self.client.get(worker.url + "/metrics",
                                       timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                load = load_from_prometheus(await resp.text()) if resp.status == 200 else None
        except (asyncio.TimeoutError, aiohttp.ClientError, UnicodeDecodeError) as exc:
            log.debug("could not read the load gauges of %s: %r", worker.url, exc)
            load = None
        if load is not None:
            worker.learn_load(load, None, None, asyncio.get_running_loop().time())

    async def probe(self, worker: Worker) -> bool:
        cause = ""
        try:
            status, _ = await self._get(worker, "/health")
            if status == 200:
                status, _ = await self._get(worker, "/ready")
            ok = status == 200
            cause = "" if ok else f"answered {status}"
        except asyncio.TimeoutError:  # the builtin only from 3.11 on
            ok, cause = False, "timeout"
        except (aiohttp.ClientError, ValueError) as exc:
            ok, cause = False, describe_failure(exc, worker.url)
        first = worker not in self._seen
        self._seen.add(worker)
        if ok:
            worker.probe_failures, worker.probe_successes = 0, worker.probe_successes + 1
            if not worker.ready and (first or worker.probe_successes >= self.success_threshold):
                await self._learn(worker)
                self._set(worker, True, "probes pass")
            if worker.load_gauges:
                await self._read_gauges(worker)
            if worker.load_at and asyncio.get_running_loop().time() - worker.load_at > 3 * self.interval_s:
                worker.forget_load()  # it stopped reporting: an old figure would skew placement for good
        else:
            worker.probe_successes, worker.probe_failures = 0, worker.probe_failures + 1
            if worker.ready and worker.probe_failures >= self.failure_threshold:
                self._set(worker, False, cause)
            elif first:
                log.warning("worker %s not ready yet: %s", worker.url, cause)
            if cause == "timeout" and worker.probe_failures >= self.failure_threshold:
                for exchange in list(worker.active):  # hung: its silent attempts go elsewhere now
                    exchange.abort_attempt(f"worker {worker.url} stopped answering probes")
        return worker.ready

    async def _learn(self, worker: Worker) -> None:
        """What the worker serves; a worker that does not say keeps serving anything."""
        try:
            status, body = await self._get(worker, "/v1/models")
            if status == 200 and isinstance(body, dict):
                listed = [m for m in body.get("data", []) if isinstance(m, dict) and "id" in m]
                worker.models = frozenset(m["id"] for m in listed)
                worker.load_gauges = any(m.get("owned_by") == "vllm" for m in listed)
            status, body = await self._get(worker, "/v1/recipes")
            if status == 200 and isinstance(body, dict):
                infos = tuple(r for r in body.get("recipes", [])
                              if isinstance(r, dict) and isinstance(r.get("name"), str))
                worker.recipes, worker.recipe_infos = frozenset(r["name"] for r in infos), infos
                default = body.get("default")
                worker.recipe_default = default if isinstance(default, str) else None
        except (asyncio.TimeoutError, aiohttp.ClientError, ValueError, TypeError) as exc:
            log.warning("could not read what worker %s serves: %r", worker.url, exc)

    def _set(self, worker: Worker, ready: bool, why: str) -> None:
        worker.ready = ready
        self.pool.version += 1
        log.log(logging.INFO if ready else logging.WARNING, "worker %s is %s (%s)", worker.url,
                "ready" if ready else "NOT ready", why)
        if self.on_change:
            self.on_change(worker, ready, why)

    async def probe_all(self) -> None:
        workers = self.pool.workers
        self._seen &= set(workers)
        await asyncio.gather(*(self.probe(w) for w in workers))
        for w in self.pool.reap():
            log.info("worker %s drained and removed", w.url)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.probe_all()
            except Exception:  # a bug here must not stop health checking for good
                log.exception("health check round failed")

    async def start(self) -> None:
        await self.probe_all()
        self._task = asyncio.create_task(self._run(), name="genrm-router-health")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
