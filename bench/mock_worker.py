"""A fast mock OpenAI-compatible worker for router benchmarks (bench-only; never a test double).

Raw asyncio protocol on uvloop with httptools, so one core answers well over 15k req/s and the
router, not the worker, is what a benchmark measures. Answers ``/health``, ``/ready``, ``/v1/models``,
``/v1/recipes``, ``/stats`` (requests and POSTs so far) and, for any POST, a fixed chat-completion JSON
after ``--delay-ms`` (service time).
``--max-concurrency`` caps requests served at once (a GPU's batch slots); the rest wait their turn.
Every POST and ``/ready`` answer reports the worker's load as the GenRM server does (an ORCA
``endpoint-load-metrics`` header, ``common/load_report.py``: POSTs in flight, the answered one included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httptools
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo's common package
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

_CHAT = json.dumps({
    "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": "mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "\\boxed{-1}"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 512, "completion_tokens": 4, "total_tokens": 516},
}).encode()
_GET = {
    b"/health": b'{"status":"ok"}',
    b"/ready": b'{"status":"ready"}',
    b"/v1/models": b'{"object":"list","data":[{"id":"mock","object":"model","owned_by":"genrm"}]}',
    b"/v1/recipes": b'{"default":"math","recipes":[]}',
}


def _response(status: bytes, body: bytes, worker_id: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nx-worker: " + worker_id + extra
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


_AVERAGE = TimeAverage()  # of the POSTs in flight, as the GenRM server keeps it
_LATENCY = TimeAverage()  # of the seconds a POST takes, likewise


def _count(stats: dict[str, int], delta: int) -> None:
    _AVERAGE.add(stats["in_flight"], time.monotonic())  # the count that held until now
    stats["in_flight"] += delta


def _load_header(stats: dict[str, int], slots: int, started: float | None = None) -> bytes:
    """The ORCA load report of this moment: POSTs being served, their averages (count, seconds each, the one
    answered now, started at ``started``, included), and running / waiting."""
    busy, now = stats["in_flight"], time.monotonic()
    if started is not None:
        _LATENCY.add(now - started, now)
    running = min(busy, slots) if slots else busy
    return b"\r\n" + HEADER.encode() + b": " + format_report({
        IN_FLIGHT: busy, IN_FLIGHT_AVG: round(_AVERAGE.add(busy, now), 2),
        LATENCY_AVG: round(current_latency(_LATENCY, busy, now), 4), RUNNING: running, WAITING: busy - running})


class _Worker(asyncio.Protocol):
    def __init__(self, delay: float, slots: asyncio.Semaphore | None, worker_id: bytes, stats: dict[str, int],
                 max_concurrency: int = 0):
        self.delay, self.slots, self.worker_id, self.stats = delay, slots, worker_id, stats
        self.max_concurrency = max_concurrency
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.queue: asyncio.Queue[float] | None = None  # arrival time of each POST waiting for its answer
        self.task: asyncio.Task | None = None
        self.pending = 0  # POSTs of this connection not answered yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        url, self.url = self.url.split(b"?")[0], b""
        method = self.parser.get_method()
        self.stats["requests"] += 1
        if method == b"GET":
            body = json.dumps(self.stats).encode() if url == b"/stats" else _GET.get(url)
            report = _load_header(self.stats, self.max_concurrency) if url == b"/ready" else b""
            self.transport.write(_response(b"200 OK" if body else b"404 Not Found", body or b"{}", self.worker_id,
                                           report))
            return
        self.stats["posts"] += 1
        if self.delay == 0 and self.slots is None:
            _count(self.stats, 1)
            self.transport.write(_response(b"200 OK", _CHAT, self.worker_id,
                                           _load_header(self.stats, 0, time.monotonic())))
            _count(self.stats, -1)
            return
        _count(self.stats, 1)
        self.pending += 1
        # Pipelined requests on one connection are answered in order, each after its own service time.
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._serve())
        self.queue.put_nowait(time.monotonic())

    async def _serve(self) -> None:
        while True:
            started = await self.queue.get()
            if self.slots is not None:
                async with self.slots:
                    await asyncio.sleep(self.delay)
            else:
                await asyncio.sleep(self.delay)
            report = _load_header(self.stats, self.max_concurrency, started)
            _count(self.stats, -1)
            self.pending -= 1
            if self.transport.is_closing():
                return
            self.transport.write(_response(b"200 OK", _CHAT, self.worker_id, report))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task:
            self.task.cancel()
        _count(self.stats, -self.pending)  # never answered now
        self.pending = 0


async def serve(host: str, port: int, delay_ms: float, max_concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    stats = {"requests": 0, "posts": 0, "in_flight": 0}
    worker_id = f"{host}:{port}".encode()
    server = await loop.create_server(lambda: _Worker(delay_ms / 1000, slots, worker_id, stats, max_concurrency),
                                      host, port, backlog=4096, reuse_address=True)
    print(f"mock worker on http://{host}:{server.sockets[0].getsockname()[1]} pid {os.getpid()}", flush=True)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--delay-ms", type=float, default=0.0, help="Service time of each POST.")
    p.add_argument("--max-concurrency", type=int, default=0, help="POSTs served at once (0 = unlimited).")
    a = p.parse_args()
    uvloop.run(serve(a.host, a.port, a.delay_ms, a.max_concurrency))


if __name__ == "__main__":
    main()
