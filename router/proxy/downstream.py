"""Client-facing HTTP/1.1 connections: parse requests with httptools, answer them in order.

One request per connection is handled at a time; pipelined ones wait in a queue. A client that
leaves mid-request is reported to the handler (``on_gone``) so the upstream attempt is aborted and
the worker frees its engine slot. Write back-pressure from a slow client pauses the worker stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools

from trainer_client.protocol import error_body

log = logging.getLogger("genrm.router")

_REASONS = {200: b"OK", 201: b"Created", 204: b"No Content", 400: b"Bad Request", 401: b"Unauthorized",
            403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed", 409: b"Conflict",
            413: b"Payload Too Large", 422: b"Unprocessable Entity", 429: b"Too Many Requests",
            499: b"Client Closed Request", 500: b"Internal Server Error", 502: b"Bad Gateway",
            503: b"Service Unavailable", 504: b"Gateway Timeout"}


class Request:
    """One parsed client request; ``handler`` is whatever the router attached to it (an exchange)."""

    __slots__ = (
        "body",
        "handler",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "rejected",
        "started",
        "version",
    )

    def __init__(self, method: str, path: str, query: str, headers: list[tuple[bytes, bytes]], body: bytes,
                 keep_alive: bool, version: str):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body
        self.keep_alive, self.version = keep_alive, version
        self.rejected: tuple[int, str, str | None] | None = None
        self.handler: Any = None
        self.started = 0.0

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


class ClientConnection(asyncio.Protocol):
    def __init__(self, dispatch: Callable[[ClientConnection, Request], None], max_body_bytes: int,
                 on_open: Callable[[ClientConnection], None] | None = None,
                 on_close: Callable[[ClientConnection], None] | None = None):
        self.dispatch, self.max_body_bytes = dispatch, max_body_bytes
        self.on_open, self.on_close = on_open, on_close
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.active: Request | None = None
        self.closed = False
        self.paused_by: Any = None  # the upstream connection paused because this client reads slowly
        self.write_paused = False
        self.discard = False  # refused an upload: ignore the rest of it
        self.idle_since = 0.0  # when the last answer ended (the idle reaper closes long-idle connections)
        self.parked: Any = None  # the Parking (router/parking.py) keeping it unread while its key's backlog is long
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._reject: tuple[int, str, str | None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        self.idle_since = self.loop.time()
        if self.on_open:
            self.on_open(self)

    def data_received(self, data: bytes) -> None:
        if self.discard:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:  # a bug of ours in a handler: say so, keep serving others
            log.exception("router error while handling a request")
            self._fatal(500, "internal router error (see the router log)")
        except httptools.HttpParserUpgrade:
            self._fatal(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fatal(400, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_close:
            self.on_close(self)
        active, self.active = self.active, None
        self.queue.clear()
        if active is not None and active.handler is not None:
            active.handler.on_gone()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.paused_by is not None:
            self.paused_by.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.paused_by is not None:
            self.paused_by.resume_reading()

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        length = None
        expect = False
        for k, v in self._headers:
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
            elif k == b"expect" and v.lower() == b"100-continue":
                expect = True
        if self.parser.should_upgrade():  # CONNECT, or Connection: upgrade: answered here, never dispatched
            self._reject = (400, "protocol upgrades are not supported", None)
        elif length is not None and length > self.max_body_bytes:
            self._reject = (413, f"request body exceeds the limit of {self.max_body_bytes} bytes (max_body_bytes)",
                            "body")
            if self.active is None and not self.queue:  # answer now: never read a body we will refuse
                self._refuse_upload()
        elif expect:  # curl sends Expect for bodies over 1 KiB and would otherwise wait a second
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._reject is not None:
            return
        self._size += len(body)
        if self._size > self.max_body_bytes:  # chunked bodies have no length up front
            self._reject = (413, f"request body exceeds the limit of {self.max_body_bytes} bytes (max_body_bytes)",
                            "body")
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        version = self.parser.get_http_version()
        request = Request(self.parser.get_method().decode("latin-1"), path, query, self._headers,
                          b"".join(self._body), self.parser.should_keep_alive(), version)
        request.rejected = self._reject
        self._reset()
        if self.active is None:
            self._start(request)
        else:
            self.queue.append(request)

    # -- answering ----------------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        self.active = request
        request.started = self.loop.time()
        if request.rejected is not None:
            status, message, param = request.rejected
            request.keep_alive = False  # the rest of an oversized body may still be coming: close after
            self.send_json(status, error_body(status, message, param=param))
            return
        self.dispatch(self, request)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def finish(self, close: bool = False) -> None:
        """The active request is answered: close, or go on with the next pipelined one."""
        request, self.active = self.active, None
        self.paused_by = None
        if request is not None:
            request.handler = None  # break the request <-> exchange cycle: freed by refcount, not the GC
        if self.closed:
            return
        if close or request is None or not request.keep_alive:
            self.closed = True
            self.transport.close()
            return
        if self.queue:
            self._start(self.queue.popleft())
        else:
            self.idle_since = self.loop.time()

    def send(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
             content_type: bytes = b"application/json") -> None:
        """A complete response generated by the router itself; then :meth:`finish`."""
        request = self.active
        keep = request is not None and request.keep_alive
        head = [b"HTTP/1.1 ", str(status).encode(), b" ", _REASONS.get(status, b"Unknown"),
                b"\r\ncontent-type: ", content_type, b"\r\ncontent-length: ", str(len(body)).encode()]
        for k, v in headers or ():
            head += [b"\r\n", k, b": ", v]
        if not keep:
            head.append(b"\r\nconnection: close")
        head.append(b"\r\n\r\n")
        self.write(b"".join(head) + body)
        self.finish()

    def send_json(self, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.send(status, json.dumps(payload).encode(), headers)

    def _refuse_upload(self) -> None:
        status, message, param = self._reject
        self.active = Request("", "", "", [], b"", False, "1.1")
        self.send_json(status, error_body(status, message, param=param))  # with connection: close, then closed
        self.discard = True

    def _fatal(self, status: int, message: str) -> None:
        active = self.active
        if active is not None and not self.closed and active.handler is None:  # not answered and not proxied
            self.active = None
        if self.active is None and not self.closed:
            self.active = Request("", "", "", [], b"", False, "1.1")
            self.send_json(status, error_body(status, message))
        elif not self.closed:
            self.closed = True
            self.transport.close()
