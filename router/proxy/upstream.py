"""Keep-alive HTTP/1.1 connections to workers: send one request, parse the response, hand bytes on.

Response bytes are passed through *undecoded*: once the exchange has accepted the status line and
headers, every chunk the worker sends is written to the client as is (chunked SSE included) while
httptools only tracks where the message ends, so the connection can go back to the pool. That is
what keeps the router's cost per request a few tens of microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import TYPE_CHECKING, Protocol

import httptools

if TYPE_CHECKING:
    from router.workers import Worker


class ResponseSink(Protocol):
    """What an upstream connection reports to (the exchange that owns the current attempt)."""

    forwarding: bool

    def on_head(self, conn: UpstreamConnection, status: int, headers: list[tuple[bytes, bytes]],
                raw: bytes) -> None: ...
    def on_data(self, data: bytes) -> None: ...
    def on_complete(self, conn: UpstreamConnection) -> None: ...
    def on_error(self, conn: UpstreamConnection, exc: BaseException | None) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "buf",
        "closed",
        "done",
        "got_bytes",
        "head_done",
        "headers",
        "idle_since",
        "keep_alive",
        "mid_chunk",
        "parser",
        "pool",
        "reused",
        "sink",
        "status",
        "transport",
    )

    def __init__(self, pool: ConnectionPool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.buf: list[bytes] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.head_done = self.done = self.got_bytes = self.reused = self.closed = self.mid_chunk = False
        self.idle_since = 0.0
        self.keep_alive = True

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:  # bytes nobody asked for: the connection is out of step, drop it
            self.close()
            return
        self.got_bytes = True
        if sink.forwarding:
            sink.on_data(data)
        else:
            self.buf.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            return
        if self.head_done and not sink.forwarding and self.sink is sink:
            raw, self.buf = b"".join(self.buf), []
            sink.on_head(self, self.status, self.headers, raw)
        if self.done and self.sink is sink:
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.sink is not None and not self.done:
            self._fail(exc)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True

    def on_message_complete(self) -> None:
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful inside the callback

    # Chunk boundaries: a broken stream can end with an in-band error event only between chunks.
    def on_chunk_header(self) -> None:
        self.mid_chunk = True

    def on_chunk_complete(self) -> None:
        self.mid_chunk = False

    # -- used by the exchange -----------------------------------------------------------------

    def send(self, sink: ResponseSink, data: bytes) -> None:
        self.sink = sink
        self.status, self.head_done, self.done, self.got_bytes = 0, False, False, False
        self.headers = []
        self.transport.write(data)

    def detach(self) -> None:
        """The exchange gave up on this attempt (retry, client gone, timeout): never reuse the connection."""
        self.sink = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.close()

    def _finish(self) -> None:
        sink, self.sink = self.sink, None
        if self.keep_alive and not self.closed:
            self.pool.put(self)
        else:
            self.close()
        sink.on_complete(self)

    def _fail(self, exc: BaseException | None) -> None:
        sink, self.sink = self.sink, None
        self.close()
        if sink is not None:
            sink.on_error(self, exc)


class ConnectionPool:
    """Idle keep-alive connections to one worker, most recently used first."""

    __slots__ = ("idle", "keepalive_s", "max_idle", "ssl", "worker")

    def __init__(self, worker: Worker, max_idle: int = 512, keepalive_s: float = 4.0,
                 ssl_context: ssl.SSLContext | None = None):
        self.worker = worker
        self.idle: list[UpstreamConnection] = []
        self.max_idle = max_idle
        # Below uvicorn's default 5 s keep-alive: a connection the worker is about to close is not reused.
        self.keepalive_s = keepalive_s
        self.ssl = ssl_context

    def get(self) -> UpstreamConnection | None:
        idle = self.idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                conn.reused = True
                return conn
            conn.close()
        return None

    def put(self, conn: UpstreamConnection) -> None:
        if len(self.idle) >= self.max_idle:
            conn.close()
            return
        # A slow client may have paused its reading (back-pressure) until its last write: an idle connection
        # must read again, or its next answer would never arrive.
        conn.resume_reading()
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    async def connect(self, timeout_s: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        w = self.worker
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self), w.host, w.port, ssl=self.ssl), timeout_s
        )
        return conn

    def close_all(self) -> None:
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()
