"""The router application: which request goes where, and the operational and admin routes.

Proxied routes run on the lean hot path (:mod:`router.proxy`); ``/health``, ``/ready``,
``/metrics``, ``/workers`` and the ``/admin`` API are answered here directly. Auth: with client
keys configured every route but ``/health`` and ``/ready`` needs one; ``/admin`` needs an admin key.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import aiohttp

from common.api_keys import KeyRing
from router.admin import AdminApi
from router.core import RouterCore
from router.discovery import DnsDiscovery, parse_dns_target
from router.fair_queue import Tenant
from router.fanout import FanOut
from router.health import HealthChecker
from router.openapi import OpenApiDocument
from router.proxy.downstream import ClientConnection, Request
from router.proxy.exchange import Exchange
from router.rate_limit import RateLimiter
from router.request_info import RequestInfo
from router.settings import RouterSettings
from router.workers import DNS, Worker
from trainer_client.protocol import error_body

log = logging.getLogger("genrm.router")

_PUBLIC = frozenset({"/health", "/ready"})
_METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class RouterApp:
    def __init__(self, settings: RouterSettings, loop: asyncio.AbstractEventLoop):
        self.settings = settings
        self.core = RouterCore(settings, loop)
        self.keys = KeyRing(settings.api_keys, settings.admin_api_keys)
        self.limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self.admin = AdminApi(self)
        self.openapi = OpenApiDocument(self)  # GET /openapi.json (router/openapi.py)
        self.connections: set[ClientConnection] = set()
        self.client: aiohttp.ClientSession | None = None
        self.health: HealthChecker | None = None
        self.discoveries: list[DnsDiscovery] = []  # one per --discovery-dns name
        self._reaper: asyncio.Task | None = None
        self.bound: tuple[str, int] | None = None  # where the server listens (admin refuses self-loops)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.core.start()
        # Probes and /v1/models, /v1/recipes learning; workers with keys (genrm serve --api-keys) need ours.
        auth = {"Authorization": f"Bearer {s.worker_api_key}"} if s.worker_api_key else None
        self.client = aiohttp.ClientSession(skip_auto_headers=("User-Agent",), headers=auth)
        self.health = HealthChecker(self.core.pool, self.client, s.health_interval_s, s.health_timeout_s,
                                    s.health_failure_threshold, s.health_success_threshold, self._on_health)
        for target in s.discovery_dns:
            name, port, scheme = parse_dns_target(target)
            # One name keeps the plain "dns" source; several get one each, so none drains another's workers.
            source = DNS if len(s.discovery_dns) == 1 else f"{DNS}:{name}:{port}"
            discovery = DnsDiscovery(self.core.pool, name, port, scheme, s.discovery_interval_s,
                                     s.discovery_nameservers or None, self._on_discovery, source=source)
            self.discoveries.append(discovery)
        await asyncio.gather(*(d.start() for d in self.discoveries))
        await self.health.start()
        self._reaper = asyncio.create_task(self._reap_idle(), name="genrm-router-idle-reaper")
        ready = sum(w.ready for w in self.core.pool.workers)
        log.info("router: %d workers (%d ready); policy %s, reward policy %s%s", len(self.core.pool.workers), ready,
                 s.policy, s.reward_policy, "; API keys required" if self.keys.enabled else "")
        self._log_fair_share()

    def _log_fair_share(self) -> None:
        """Say which key id is which weight (ids only: an operator matches them with sha256sum), and warn when
        fair share cannot act: without a per-worker cap nothing waits at the router, the workers queue FIFO."""
        s = self.settings
        if self.keys.enabled:
            tenants = self.core.queue.tenants
            log.info("router: fair share %s; API key ids (weight): %s", "on" if s.fair_share else "off (FIFO)",
                     ", ".join(f"{i} ({tenants[i].weight:g})" for i in self.keys.ids))
        if s.fair_share and (self.keys.enabled or s.key_weights) and not s.max_in_flight_per_worker:
            log.warning("router: fair share between API keys needs --max-in-flight-per-worker: with no cap every "
                        "request goes straight to a worker and waits there in arrival order")

    async def _reap_idle(self) -> None:
        limit = self.settings.client_idle_timeout_s
        while True:
            await asyncio.sleep(min(5.0, limit / 2))
            now = self.core.loop.time()
            for conn in list(self.connections):
                if (conn.active is None and conn.parked is None and now - conn.idle_since > limit
                        and conn.transport is not None):
                    conn.transport.close()
            self.core.reap_parked(limit, now)  # parked ones only when nothing waits to be read on them

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(d.stop() for d in self.discoveries))
        if self.health:
            await self.health.stop()
        await self.core.stop()
        for w in self.core.pool.workers:
            w.conns.close_all()
        if self.client:
            await self.client.close()

    def _on_discovery(self, added: list[str], drained: list[str]) -> None:
        if added and self.health is not None:  # probe newcomers now rather than at the next round
            for url in added:
                self.core.loop.create_task(self.health.probe(self.core.pool.by_url[url]))

    def _on_health(self, worker: Worker, ready: bool, why: str) -> None:
        if ready:
            self.core.wake_all()  # capacity came back: queued requests may go now
        else:
            self.core.metrics.ejections.labels(worker=worker.url, cause="probe").inc()

    # -- connections --------------------------------------------------------------------------

    def connection(self) -> ClientConnection:
        return ClientConnection(self.dispatch, self.settings.max_body_bytes, self.connections.add, self._closed)

    def _closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if conn.parked is not None:
            self.core.forget_parked(conn)

    def busy(self) -> int:
        return sum(1 for c in self.connections if c.active is not None)

    # -- dispatch -----------------------------------------------------------------------------

    def dispatch(self, client: ClientConnection, request: Request) -> None:
        path = request.path
        if path in _PUBLIC and request.method == "GET":
            return self._public(client, path)
        role = key = None
        if self.keys.enabled:
            role, key = self.keys.identify(request.header(b"authorization"))
            if role is None:
                self.core.metrics.rejected.labels(reason="auth").inc()
                return client.send_json(401, error_body(401, "missing or invalid API key (Authorization: Bearer)",
                                                        param="authorization"), [(b"www-authenticate", b"Bearer")])
        if path.startswith("/admin"):
            return self.admin.handle(client, request, role)
        tenant = self.core.queue.tenant(key)
        if self.limiter.enabled:
            wait = self.limiter.take(key or self._peer(client))
            if wait:
                self.core.reject(tenant, "rate_limit")
                return client.send_json(429, error_body(429, f"rate limit of {self.settings.rate_limit_rps:g} "
                                                             "requests/s exceeded (rate_limit_rps)"),
                                        [(b"retry-after", str(max(1, math.ceil(wait))).encode())])
        if request.method == "GET" and path == "/openapi.json":
            return self.openapi.handle(client)
        if request.method == "GET" and path in ("/metrics", "/workers"):
            return self._ops(client, path)
        if request.method == "GET" and path == "/v1/models" and not self.core.homogeneous():
            models, _ = self.core.pool.served()  # pools differ: list every model, not one worker's
            return client.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "owned_by": "genrm"} for m in models]})
        if request.method == "GET" and path == "/v1/recipes" and not self.core.homogeneous():
            return client.send_json(200, self._recipes())
        if request.method not in ("GET", "POST", "DELETE", "PUT", "PATCH"):
            return client.send_json(405, error_body(405, f"method {request.method} is not supported"))
        policy, retry = self.core.policy_for(path)
        info = RequestInfo(path, request.body, request.headers, self.settings.affinity_prefix_chars,
                           query=request.query)
        if path == "/v1/reward/batch" and request.method == "POST" and self._fan_out(client, request, info, tenant):
            return
        exchange = Exchange(self.core, client, request, info, policy, path, retry, tenant)
        request.handler = exchange
        exchange.start()

    def _fan_out(self, client: ClientConnection, request: Request, info: RequestInfo, tenant: Tenant) -> bool:
        mixed = not self.core.homogeneous()
        if info.header(b"x-affinity-key") is not None and not (mixed and info.recipe is None):
            return False  # grouped by the client (RewardClient does): routed whole by its key, never parsed here
        body = info.json
        samples = body.get("samples") if isinstance(body, dict) and body.keys() == {"samples"} else None
        if not isinstance(samples, list) or len(samples) < 2 or len(samples) > 16384:
            return False  # one worker's own validation answers anything odd
        if mixed and info.recipe is None:  # recipes differ between samples: each goes to its own pool
            workers = self.core.pool.eligible()
        else:
            try:
                workers = self.core.candidates(info, set())
            except LookupError:
                return False
            if len(workers) < 2:
                return False
        fan = FanOut(self.core, client, request, samples, tenant)
        request.handler = fan
        fan.start(workers)
        return True

    def _recipes(self) -> dict[str, Any]:
        """Every recipe some worker serves (pools differ: judges and sandboxes), the judges' default first."""
        live = sorted((w for w in self.core.pool.workers if not w.draining and w.recipes),
                      key=lambda w: not w.models)  # workers with a model first: recipe-less rewards go there
        merged: dict[str, dict] = {}
        for worker in live:
            for info in worker.recipe_infos:
                merged.setdefault(info["name"], info)
        return {"default": live[0].recipe_default if live else None, "recipes": list(merged.values())}

    @staticmethod
    def _peer(client: ClientConnection) -> str:
        """Whom a request without a key is counted against: its address (a verified key is counted by its id,
        however the header spells it)."""
        peer = client.transport.get_extra_info("peername") if client.transport else None
        return str(peer[0]) if peer else "?"

    # -- operational routes -------------------------------------------------------------------

    def _public(self, client: ClientConnection, path: str) -> None:
        if path == "/health":
            return client.send_json(200, {"status": "ok"})
        ready = sum(1 for w in self.core.pool.workers if w.ready and not w.draining)
        if ready:
            return client.send_json(200, {"status": "ready", "ready_workers": ready})
        return client.send_json(503, error_body(503, "no worker is ready"), [(b"retry-after", b"1")])

    def _ops(self, client: ClientConnection, path: str) -> None:
        if path == "/metrics":
            return client.send(200, self.core.metrics.render(), content_type=_METRICS_TYPE)
        client.send_json(200, self.workers_payload())

    def workers_payload(self) -> dict[str, Any]:
        c = self.core
        return {"policy": c.settings.policy, "reward_policy": c.settings.reward_policy, "queue_depth": len(c.queue),
                "workers": [w.describe() for w in c.pool.workers]}


