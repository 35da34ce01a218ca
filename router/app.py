"""The router's ASGI app: a lean proxy hot path plus a few operational routes.

Everything but ``/health``, ``/ready``, ``/metrics`` and ``/workers`` is proxied to a ready worker
chosen by the policy. A request that cannot reach a worker (connection refused, connect timeout) or
gets 502/503/504 before any byte went to the client is retried on a *different* worker; in-flight
counts are released on every path, errors and client disconnects included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp

from router.health import HealthChecker
from router.metrics import RouterMetrics
from router.policies import RequestInfo, create_policy
from router.settings import RouterSettings
from router.workers import Worker, WorkerPool
from trainer_client.protocol import error_body

log = logging.getLogger("genrm.router")

# Connection-scoped headers are not forwarded (RFC 9110 §7.6.1); host and length are recomputed.
_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"host", b"content-length"}
# The router's server adds its own date/server headers; forwarding the worker's would duplicate them.
_RESPONSE_SKIP = (_HOP - {b"content-length"}) | {b"date", b"server"}
_RETRY_STATUS = {502, 503, 504}


class _Reject(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.retry_after = status, message, param, retry_after


class RouterApp:
    def __init__(self, settings: RouterSettings):
        self.settings = settings
        self.pool = WorkerPool(settings.workers)
        self.policy = create_policy(settings.policy)
        self.metrics = RouterMetrics(self.pool)
        self.client: aiohttp.ClientSession | None = None
        self.health: HealthChecker | None = None

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return None
        path = scope["path"]
        if scope["method"] == "GET" and path in ("/health", "/ready", "/metrics", "/workers"):
            return await self._ops(path, send)
        try:
            await self._proxy(scope, receive, send)
        except _Reject as r:
            headers = [(b"retry-after", str(r.retry_after).encode())] if r.retry_after else []
            await _send_json(send, r.status, error_body(r.status, r.message, param=r.param), headers)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        s = self.settings
        # aiohttp on the hot path: per-item reward calls through the router ran at 594/s with httpx and
        # 4,164/s with aiohttp on 2 cores (docs/benchmarks.md); bytes pass through undecoded.
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            # An idle timeout, not a total one: a 16k-token judge stream may run for minutes while bytes flow.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s, sock_read=s.request_timeout_s),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        self.health = HealthChecker(self.pool, self.client, s.health_interval_s, s.health_timeout_s)
        await self.health.start()
        ready = sum(w.ready for w in self.pool.workers)
        log.info("router up: %d workers (%d ready), policy %s", len(self.pool.workers), ready, s.policy)

    async def stop(self) -> None:
        if self.health:
            await self.health.stop()
        if self.client:
            await self.client.close()

    # -- operational routes -------------------------------------------------------------------

    async def _ops(self, path: str, send: Any) -> None:
        if path == "/health":
            return await _send_json(send, 200, {"status": "ok"})
        if path == "/metrics":
            body = self.metrics.render()
            return await _send(send, 200, body, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
        if path == "/workers":
            workers = [{"url": w.url, "ready": w.ready, "in_flight": w.in_flight, "failures": w.failures}
                       for w in self.pool.workers]
            return await _send_json(send, 200, {"policy": self.policy.name, "workers": workers})
        ready = len(self.pool.ready())
        if ready:
            return await _send_json(send, 200, {"status": "ready", "ready_workers": ready})
        return await _send_json(send, 503, error_body(503, "no worker is ready"))

    # -- proxy --------------------------------------------------------------------------------

    async def _proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await self._read_body(scope, receive)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP]
        target = scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        info = RequestInfo(scope["path"], body, dict(headers))
        # uvicorn silently drops sends to a client that left, so watch for it: cancelling this handler
        # closes the upstream connection, which is how the worker learns to free its engine slot.
        state = {"done": False}
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, asyncio.current_task(), state))
        try:
            await self._forward(scope["method"], target, headers, body, info, send, state)
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled():
                raise  # not ours: the server is shutting down
        finally:
            watcher.cancel()

    async def _forward(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                       info: RequestInfo, send: Any, state: dict[str, bool]) -> None:
        start = time.perf_counter()
        worker, resp = await self._open(method, target, headers, body, info)
        status = resp.status
        try:
            out_headers = [(k, v) for k, v in resp.raw_headers if k.lower() not in _RESPONSE_SKIP]
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            try:
                async for chunk in resp.content.iter_any():  # streamed through unbuffered (SSE included)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, TimeoutError) as exc:  # mid-body: nothing can be retried now
                status = 504 if isinstance(exc, TimeoutError) else 502
                log.warning("worker %s failed mid-response: %r", worker.url, exc)
                if status == 502:
                    worker.mark_failed()  # it dropped us; a silent (slow) worker is not marked
                if resp.content_type == "text/event-stream":  # tell a streaming client in-band, as vLLM does
                    message = f"worker {worker.url} failed mid-stream: {exc!r}"
                    event = b"data: " + json.dumps(error_body(status, message)).encode() + b"\n\n"
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            state["done"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            resp.release()
            worker.in_flight -= 1
            self.metrics.requests.labels(status=str(status), worker=worker.url).inc()
            self.metrics.latency.observe(time.perf_counter() - start)

    async def _open(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, info: RequestInfo
    ) -> tuple[Worker, aiohttp.ClientResponse]:
        """Send to a worker, failing over to untried ones; the caller owns the worker's in-flight slot."""
        assert self.client is not None
        tried: set[Worker] = set()
        last_error = "no worker is ready"
        for attempt in range(self.settings.max_attempts):
            candidates = self.pool.ready(exclude=tried)
            if not candidates:
                break
            if attempt:
                self.metrics.retries.inc()
            worker = self.policy.select(candidates, info)
            tried.add(worker)
            worker.in_flight += 1
            try:
                resp = await self.client.request(method, worker.url + target, headers=headers, data=body)
            except aiohttp.ConnectionTimeoutError as exc:  # never reached it (before ServerTimeoutError below)
                worker.in_flight -= 1
                worker.mark_failed()
                last_error = f"worker {worker.url} unreachable: {exc!r}"
            except aiohttp.ServerTimeoutError:  # reached it, then silence past request_timeout_s: slow, not dead
                worker.in_flight -= 1
                raise _Reject(504, f"worker {worker.url} sent nothing for {self.settings.request_timeout_s:g}s "
                              "(request_timeout_s)") from None
            except aiohttp.ClientError as exc:  # refused, reset or dropped before answering: try another
                worker.in_flight -= 1
                worker.mark_failed()
                last_error = f"worker {worker.url} failed: {exc!r}"
            except BaseException:
                worker.in_flight -= 1
                raise
            else:
                last = attempt == self.settings.max_attempts - 1 or not self.pool.ready(exclude=tried)
                if resp.status not in _RETRY_STATUS or last:
                    worker.mark_ok()
                    return worker, resp
                resp.release()
                worker.in_flight -= 1
                last_error = f"worker {worker.url} answered {resp.status}"
            log.warning("%s; trying another worker", last_error)
        self.metrics.no_worker.inc()
        if tried:  # workers were tried and failed: a gateway error the client may retry
            raise _Reject(502, f"no worker could answer ({len(tried)} tried; last: {last_error})", retry_after=1)
        raise _Reject(503, f"no worker could take the request ({last_error})", retry_after=1)

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes:
        limit = self.settings.max_body_bytes
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Reject(499, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Reject(413, f"request body exceeds the limit of {limit} bytes (max_body_bytes)", "body")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, status, json.dumps(payload).encode(), [(b"content-type", b"application/json"), *(headers or [])])


async def _cancel_on_disconnect(receive: Any, handler: asyncio.Task | None, state: dict[str, bool]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if handler is not None and not state["done"]:
        handler.cancel()


def create_app(settings: RouterSettings) -> RouterApp:
    return RouterApp(settings)
