"""The router's shared state: workers, policies per route, the wait queue, metrics, access log.

Exchanges (one per proxied request) call back into it to find candidate workers, wait for a slot,
report ejections and record their outcome.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from common.api_keys import key_id
from router.fair_queue import FairQueue, Tenant
from router.metrics import RouterMetrics
from router.policies import Policy, create_policy
from router.proxy.downstream import ClientConnection
from router.request_info import REWARD_PATHS, RequestInfo
from router.settings import RouterSettings
from router.workers import ANY_MODEL, STATIC, Worker, WorkerPool

if TYPE_CHECKING:
    from router.proxy.exchange import Exchange

log = logging.getLogger("genrm.router")
access = logging.getLogger("genrm.router.access")

_RETRY = frozenset({429, 502, 503, 504})
_RETRY_IDEMPOTENT = _RETRY | {500}  # reward scoring is idempotent: a 500 there is worth another worker
RUN_CODE = "/run_code"  # SandboxFusion's API: served by the workers that serve the code recipe
ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/classify", "/classify",
                    "/v1/recipes", RUN_CODE, *REWARD_PATHS})


class RouterCore:
    def __init__(self, settings: RouterSettings, loop: asyncio.AbstractEventLoop):
        self.settings, self.loop = settings, loop
        self.pool = WorkerPool(max_in_flight=settings.max_in_flight_per_worker,
                               breaker_threshold=settings.breaker_failure_threshold,
                               breaker_base_s=settings.breaker_backoff_s, breaker_max_s=settings.breaker_backoff_max_s)
        for url in settings.workers:
            self.pool.add(url, STATIC)
        self.policies: dict[str, Policy] = {}
        for name in {settings.policy, settings.reward_policy}:
            self.policies[name] = create_policy(name, settings)
        self.default_policy = self.policies[settings.policy]
        self.reward_policy = self.policies[settings.reward_policy]
        ids = [key_id(k) for k in (*settings.admin_api_keys, *settings.api_keys)]
        self.queue = FairQueue(ids, settings.key_weights, settings.queue_size, fair=settings.fair_share,
                               on_left=self._unpark)
        # Slots are kept for a key's next request only where slots run out (a cap) and keys share fairly.
        self._hold_s = settings.fair_share_hold_s if settings.max_in_flight_per_worker and settings.fair_share else 0
        self._capacity, self._capacity_version = 0, -1
        # Parking a long backlog's connections protects other keys; with one class (no keys) it would only turn
        # the queue's 503s (queue_size, queue_timeout_s) into waits in the socket buffers.
        # Not over TLS: its layer may hold read bytes that the parked connections' epoll set cannot see.
        self._parking = settings.fair_share and len(self.queue.tenants) > 1 and not settings.ssl_certfile
        self.watched: set[Exchange] = set()  # attempts out, checked by the sweeper
        self._sweeper: asyncio.Task | None = None
        self.metrics = RouterMetrics(self.pool, lambda: self.policies, lambda: len(self.queue),
                                     lambda: self.queue.tenants.values())
        self.log_access = access.isEnabledFor(logging.INFO)
        self._served_version = -1
        self._homogeneous = True
        self._some_model = True

    # -- choosing workers ---------------------------------------------------------------------

    def policy_for(self, path: str) -> tuple[Policy, frozenset[int]]:
        if path in REWARD_PATHS:
            return self.reward_policy, _RETRY_IDEMPOTENT
        if path == RUN_CODE:  # running a program again elsewhere is safe
            return self.default_policy, _RETRY_IDEMPOTENT
        return self.default_policy, _RETRY

    def homogeneous(self) -> bool:
        """All workers serve the same models and recipes: no need to read a request's model.

        Judged over every worker that said what it serves, ready or not: a model whose only worker is
        down must not look "served by all" and be sent to workers that never had it.
        """
        if self.pool.version != self._served_version:
            said = [w for w in self.pool.by_url.values()
                    if not w.draining and (w.models is not None or w.recipes is not None)]
            self._homogeneous = len({(w.models, w.recipes) for w in said}) <= 1
            self._some_model = any(w.models is None or w.models for w in self.pool.by_url.values())
            self._served_version = self.pool.version
        return self._homogeneous

    def wanted(self, path: str, model: str | None, recipe: str | None) -> tuple[str | None, str | None]:
        """What a worker must serve to take a request on ``path`` naming ``model``/``recipe``: (model, recipe),
        None meaning "no matter". A reward without a recipe (the server's default) goes to workers with a model
        when there are any: a sandbox server's default is the code recipe, not what a judge client meant."""
        if path == RUN_CODE:  # only sandbox servers have the route, whatever else the pool looks like
            return None, "code"
        if self.homogeneous():
            return None, None
        if path in REWARD_PATHS:
            return (ANY_MODEL if recipe is None and self._some_model else None), recipe
        return model or ANY_MODEL, None

    def _wanted(self, info: RequestInfo) -> tuple[str | None, str | None]:
        if info.path != RUN_CODE and self.homogeneous():
            return None, None
        is_reward = info.path in REWARD_PATHS
        return self.wanted(info.path, None if is_reward else info.model, info.recipe if is_reward else None)

    def candidates(self, info: RequestInfo, tried: set[Worker], busy_ok: bool = False) -> list[Worker]:
        """Available workers not tried yet that serve what the request asks for.

        Raises LookupError when no worker serves the requested model/recipe at all (a 404); when its
        workers exist but none is ready, the list is empty (a 503 the client retries).
        With ``busy_ok``, workers that are only at their in-flight cap count too (worth waiting for).
        """
        model, recipe = self._wanted(info)
        if model is None and recipe is None:
            workers = self.pool.by_url.values()
        else:
            workers = [w for w in self.pool.by_url.values() if w.serves(model, recipe) and not w.draining]
            if not workers:
                models, recipes = self.pool.served()
                if recipe is not None:
                    hint = ("; code rewards and /run_code run on sandbox servers (genrm serve --recipe code, "
                            "genrm up --sandbox-replicas N)") if recipe == "code" else ""
                    raise LookupError(f"recipe {recipe!r} is not served by any worker; served: {recipes}{hint}")
                if model is ANY_MODEL:
                    raise LookupError(f"no worker serves a model; served recipes: {recipes}")
                raise LookupError(f"model {model!r} is not served by any worker; served: {models}")
        if busy_ok:
            return [w for w in workers if w not in tried and w.ready and not w.draining and w.breaker.allows()]
        return [w for w in workers if w.available and w not in tried]

    def has_busy(self, info: RequestInfo, tried: set[Worker]) -> bool:
        """Some untried worker would take the request but for its in-flight cap."""
        if not self.settings.max_in_flight_per_worker:
            return False
        try:
            return bool(self.candidates(info, tried, busy_ok=True))
        except LookupError:
            return False

    def no_worker_message(self, info: RequestInfo) -> str:
        workers = self.pool.workers
        if not workers:
            return "no worker is configured or discovered"
        ready = [w for w in workers if w.ready and not w.draining]
        if not ready:
            return f"no worker is ready ({len(workers)} known, none passing /ready)"
        return f"no worker can take the request now ({len(ready)} ready; circuit breakers open)"

    def retry_after_s(self) -> int:
        """Seconds until an open breaker admits a trial again (1 when nothing better is known)."""
        waits = [w.breaker.open_for - (self.loop.time() - w.breaker.opened_at)
                 for w in self.pool.by_url.values() if w.ready and w.breaker.state == "open"]
        return max(1, math.ceil(min(waits))) if waits else 1

    # -- the queue ----------------------------------------------------------------------------

    def enqueue(self, exchange: Exchange) -> bool:
        """Wait for a slot (router/fair_queue.py says who goes first); False when the queue has no room."""
        again = bool(exchange.queued_until)  # woken but no worker after all: back to its place
        admitted, pushed_out = self.queue.push(exchange, front=again)
        if not admitted:
            return False
        if pushed_out is not None:
            pushed_out.push_out()
        if not again:  # first time: its wait starts now
            exchange.queued_until = self.loop.time() + self.settings.queue_timeout_s
            if exchange.timer is not None:
                exchange.timer.cancel()
            at = exchange.queued_until if exchange.deadline is None else min(exchange.queued_until, exchange.deadline)
            exchange.timer = self.loop.call_at(at, exchange._on_timer)
        return True

    def dequeue(self, exchange: Exchange) -> bool:
        if not self.queue.remove(exchange):
            return False
        exchange.queued_until = 0.0
        return True

    def _can_go(self, exchange: Exchange) -> bool:
        try:
            return bool(self.candidates(exchange.info, exchange.tried))
        except LookupError:
            return True  # its attempt will answer the 404

    def wake(self, freed_by: Tenant | None = None) -> None:
        """A slot may have freed: the waiter the fair queue puts first among those some worker can take now goes,
        unless the slot is kept a moment for the next request of the key that freed it (``fair_share_hold_s``).

        Not just the head: a request waiting for a busy model pool must not block one behind it whose
        pool has room. The scan is bounded so a long blocked queue costs little per freed slot.
        """
        if freed_by is not None and self._hold_s and self.queue.should_hold(freed_by, self.capacity()):
            self.queue.hold(freed_by)
            self.loop.call_later(self._hold_s, self._hold_over, freed_by)
            return
        if not self.queue:
            return
        exchange = self.queue.pop(self._can_go)
        if exchange is not None:
            exchange.wake()

    def capacity(self) -> int:
        """Worker slots in all: the cap × the workers ready and not draining."""
        if self.pool.version != self._capacity_version:
            self._capacity = self.settings.max_in_flight_per_worker * sum(
                1 for w in self.pool.by_url.values() if w.ready and not w.draining)
            self._capacity_version = self.pool.version
        return self._capacity

    def _hold_over(self, tenant: Tenant) -> None:
        if self.queue.release_hold(tenant):  # not claimed by its next request in time: a waiter (if any) gets it
            self.wake()

    def may_take(self, tenant: Tenant, workers: list[Worker]) -> bool:
        """May a request of ``tenant`` take one of these free slots? Not one kept for another key's next request.
        Called only while slots are kept (``queue.held``); a request of the key they are kept for claims one."""
        if self.queue.release_hold(tenant):
            return True
        return sum(w.max_in_flight - w.in_flight for w in workers) > self.queue.held

    def wake_all(self) -> None:
        for _ in range(len(self.queue)):
            before = len(self.queue)
            self.wake()
            if len(self.queue) >= before:  # nobody could go
                return

    def reject(self, tenant: Tenant, reason: str) -> None:
        """Count a request the router answered itself with an error (all keys, and its key)."""
        self.metrics.rejected.labels(reason=reason).inc()
        tenant.rejected[reason] += 1

    # -- reading a key's requests no faster than they are served ------------------------------

    def _read_ahead(self) -> int:
        """Requests of one key read and waiting that its parked connections are read again up to; a connection
        is parked when it is answered while half as many or more wait."""
        return max(64, 2 * self.capacity())

    def _park(self, tenant: Tenant, client: object) -> None:
        """Read this idle keep-alive connection's next request later, when the key's backlog has shrunk: a burst
        of thousands then waits in the socket buffers and costs the router a read per request served, not one
        long stall that every other key's answers wait behind."""
        if isinstance(client, ClientConnection) and not client.closed and client.active is None:
            tenant.parked.park(client)

    def _unpark(self, tenant: Tenant, count: int | None = 1) -> None:
        """One of the key's waiters left the queue: read up to ``count`` more of its parked connections that have
        a request waiting, and never past the read-ahead (the sweeper, ``count=None``, reads up to it every tick,
        for a burst that comes while none of the key's requests wait: nothing else would read it)."""
        if tenant.parked:
            room = self._read_ahead() - tenant.queued
            tenant.parked.resume_ready(room if count is None else min(count, room))

    def forget_parked(self, client: ClientConnection) -> None:
        """A parked connection closed."""
        client.parked.forget(client)

    def reap_parked(self, idle_s: float, now: float) -> None:
        """Close parked connections with nothing to read that were answered over ``idle_s`` ago (idle reaper)."""
        for tenant in self.queue.tenants.values():
            for client in tenant.parked.idle() if tenant.parked else ():
                if now - client.idle_since > idle_s:
                    tenant.parked.forget(client)
                    client.transport.close()

    # -- timeouts -----------------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper = self.loop.create_task(self._sweep(), name="genrm-router-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    async def _sweep(self, tick_s: float = 0.1) -> None:
        while True:
            await asyncio.sleep(tick_s)
            now = self.loop.time()
            self.pool.update_slowness(now)
            for tenant in self.queue.tenants.values():
                self._unpark(tenant, count=None)
            for exchange in list(self.watched):
                try:
                    exchange.check(now)
                except Exception:  # one broken exchange must not stop timeouts for all
                    log.exception("timeout check failed")
                    self.watched.discard(exchange)

    # -- outcomes -----------------------------------------------------------------------------

    def on_ejected(self, worker: Worker) -> None:
        log.warning("worker %s ejected: %d failures in a row; breaker open for %.1fs", worker.url,
                    worker.breaker.failures, worker.breaker.open_for)
        self.metrics.ejections.labels(worker=worker.url, cause="breaker").inc()

    def record(self, exchange: Exchange, status: int) -> None:
        if exchange.forwarding:  # a worker's answer went out (a 499 or the router's own error did not)
            exchange.tenant.served += 1
        if self._parking and exchange.tenant.queued >= self._read_ahead() // 2:
            self._park(exchange.tenant, exchange.client)  # half: while it hovers at the read-ahead, all park
        path = exchange.request.path
        route = path if path in ROUTES else "other"
        self.metrics.observe(route, status, exchange.last_url, self.loop.time() - exchange.started)
        if self.log_access:
            access.info(exchange.log_line(status))
