"""ASGI middleware of the GenRM server: API keys, body-size limit, per-route request metrics, load reports."""

from __future__ import annotations

import json
import time
from typing import Any

from common.api_keys import KeyRing
from common.load_report import (
    HEADER,
    IN_FLIGHT,
    IN_FLIGHT_AVG,
    LATENCY_AVG,
    RUNNING,
    WAITING,
    TimeAverage,
    current_latency,
    format_report,
)
from trainer_client.protocol import error_body

Scope = dict[str, Any]


async def send_error(send: Any, status: int, message: str, param: str | None = None) -> None:
    body = json.dumps(error_body(status, message, param=param)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ApiKeys:
    """With keys set, every route but the probes answers 401 unless ``Authorization: Bearer <key>`` matches
    (constant-time compare, ``common.api_keys.KeyRing``). Keys are never logged."""

    open_paths = frozenset({"/health", "/ready"})

    def __init__(self, app: Any, keys: list[str]):
        self.app, self.keys = app, KeyRing(keys, [])

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if self.keys.role(authorization) is None:
            return await send_error(send, 401, "missing or invalid API key (Authorization: Bearer <key>)",
                                    "authorization")
        return await self.app(scope, receive, send)


class BodySizeLimit:
    """Answer 413 for bodies over ``max_bytes`` (declared or streamed) before any parsing happens.

    The body is buffered (the handlers parse all of it anyway) and replayed; later ``receive`` calls
    go to the server, so disconnect detection still works.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, 413, f"request body of {int(declared)} bytes exceeds the limit of "
                                    f"{self.max_bytes} bytes (max_body_bytes)", "body")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await send_error(send, 413, f"request body exceeds the limit of {self.max_bytes} bytes "
                                        "(max_body_bytes)", "body")
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class RequestMetrics:
    """Count requests and time them by route (known paths only, so labels stay bounded)."""

    def __init__(self, app: Any, metrics: Any, routes: set[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        status = 500
        start = time.perf_counter()

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - start)


class LoadReport:
    """Count the requests being served (probes and scrapes aside) and report them, with their average over the
    last seconds, how long they take on average, and the engine's running and waiting sequences, on every answer
    (``common.load_report``): each router replica learns the server's whole load from any answer, not only the
    share it sent itself."""

    quiet_paths = frozenset({"/health", "/ready", "/metrics"})
    header = HEADER.encode()

    def __init__(self, app: Any, engine: Any):
        self.app, self.engine = app, engine
        self.in_flight = 0
        self.average = TimeAverage()
        self.latency = TimeAverage()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counted = scope["path"] not in self.quiet_paths
        start = time.monotonic()
        if counted:
            self._count(1)

        async def send_with_report(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                engine, now = self.engine, time.monotonic()
                if counted:
                    self.latency.add(now - start, now)
                report = format_report({IN_FLIGHT: self.in_flight,
                                        IN_FLIGHT_AVG: round(self.average.add(self.in_flight, now), 2),
                                        LATENCY_AVG: round(current_latency(self.latency, self.in_flight, now), 4),
                                        RUNNING: engine.num_running, WAITING: engine.num_waiting})
                message = {**message, "headers": [*message.get("headers", ()), (self.header, report)]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_report)
        finally:
            if counted:
                self._count(-1)

    def _count(self, delta: int) -> None:
        self.average.add(self.in_flight, time.monotonic())  # the count that held until now
        self.in_flight += delta
