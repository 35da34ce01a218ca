"""router/proxy/downstream.py: client connections parsed with httptools, answered in order.

On a real router: the body limit (Content-Length, chunked, ``Expect: 100-continue``), keep-alive and pipelining,
malformed requests and unsupported methods (the 405 is the app's answer to what downstream parsed), the idle
timeout, spoken over raw sockets where the detail matters. Then ``ClientConnection`` alone on a real socket of the
test's event loop: what a request is parsed into, keep-alive rules, one request at a time with the rest queued, the
body limit, malformed input, a client that leaves, and write back-pressure handed to the worker stream.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import httpx

from router.proxy.downstream import ClientConnection, Request
from tests.conftest import start_router
from tests.support.raw_http import RawConn, post_bytes
from tests.support.router_calls import (
    CHAT,
    CHAT_PATH,
    chat,
    control,
    error_of,
    port_of,
    seen,
)


def test_body_limit(procs):
    worker = procs.echo("body")
    router = procs.router([worker], "--max-body-bytes", "2048")
    small = httpx.post(router.url + CHAT_PATH, content=b'{"x": "' + b"a" * 1500 + b'"}', timeout=10)
    assert small.status_code == 200

    resp = httpx.post(router.url + CHAT_PATH, content=b'{"x": "' + b"a" * 10_000 + b'"}', timeout=10)
    assert resp.status_code == 413 and "max_body_bytes" in error_of(resp)["message"]

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"b" * 1024

    resp = httpx.post(router.url + CHAT_PATH, content=chunks(), timeout=10)
    assert resp.status_code == 413 and "max_body_bytes" in error_of(resp)["message"]

    def small_chunks() -> Iterator[bytes]:
        yield b'{"x": '
        yield b'"chunked"}'

    resp = httpx.post(router.url + CHAT_PATH, content=small_chunks(), timeout=10)
    assert resp.status_code == 200 and resp.json()["body"] == {"x": "chunked"}
    assert len(seen(worker)) == 2  # neither oversized body was forwarded


def test_expect_continue_with_an_oversized_body_gets_413_at_once(procs):
    worker = procs.echo("body-expect")
    router = procs.router([worker], "--max-body-bytes", "2048")
    with RawConn(router.url, timeout_s=3) as conn:
        conn.send(post_bytes(CHAT_PATH, b"", "expect: 100-continue").replace(b"content-length: 0",
                                                                              b"content-length: 1000000"))
        conn.sock.settimeout(1.0)
        try:
            status, _ = conn.head()
        except TimeoutError:
            status = None
    assert status == 413


def test_keep_alive_and_pipelining(procs):
    worker = procs.echo("http")
    router = procs.router([worker])
    with httpx.Client(timeout=10) as c:
        statuses = [c.post(router.url + CHAT_PATH, json={**CHAT, "n": i}).status_code for i in range(50)]
    assert statuses == [200] * 50

    # The same TCP connection really is reused (a router closing it would fail here, not reconnect).
    with RawConn(router.url) as conn:
        for i in range(20):
            conn.send(post_bytes(CHAT_PATH, f'{{"i": {i}}}'.encode()))
            status, headers, body = conn.response()
            assert status == 200 and headers.get("connection", "").lower() != "close"
            assert b'"i":%d' % i in body.replace(b" ", b"")
        conn.send(b"GET /workers HTTP/1.1\r\nhost: r\r\n\r\n")  # router-made answers keep it open too
        status, _, body = conn.response()
        assert status == 200 and b"queue_depth" in body

        # Pipelined requests are answered in order.
        conn.send(b"".join(post_bytes(CHAT_PATH, f'{{"p": {i}}}'.encode()) for i in range(3)))
        for i in range(3):
            status, _, body = conn.response()
            assert status == 200 and b'"p":%d' % i in body.replace(b" ", b"")

        # Connection: close is honoured.
        conn.send(post_bytes(CHAT_PATH, b"{}", "connection: close"))
        status, _, _ = conn.response()
        assert status == 200 and conn.closed_by_peer()


def test_expect_100_continue_is_answered_at_once(procs, tmp_path):
    worker = procs.echo("expect")
    router = procs.router([worker])
    body = b'{"x": "' + b"c" * 2000 + b'"}'
    with RawConn(router.url) as conn:
        t0 = time.monotonic()
        conn.send(post_bytes(CHAT_PATH, b"", "expect: 100-continue").replace(b"content-length: 0",
                                                                              f"content-length: {len(body)}".encode()))
        status, _ = conn.head()
        assert status == 100 and time.monotonic() - t0 < 0.5
        conn.send(body)
        status, _, answer = conn.response()
        assert status == 200 and b"ccc" in answer

    curl = shutil.which("curl")
    if curl is None:
        return
    payload = tmp_path / "body.json"
    payload.write_bytes(body)
    t0 = time.monotonic()
    out = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect: 100-continue",
                          "-H", "content-type: application/json", "--data-binary", f"@{payload}",
                          router.url + CHAT_PATH], capture_output=True, text=True, timeout=10)
    took = time.monotonic() - t0
    assert out.stdout == "200", out
    assert took < 0.5, f"curl took {took:.2f}s: it waited for a 100 Continue that never came"


def test_malformed_requests_and_unsupported_methods(procs):
    worker = procs.echo("malformed")
    router = procs.router([worker])
    for junk in (b"NOT AN HTTP REQUEST\r\n\r\n", b"GET /v1/models HTTP/1.1\r\nbad header line\r\n\r\n",
                 b"POST /v1/models HTTP/1.1\r\ncontent-length: 12x\r\n\r\n"):
        with RawConn(router.url) as conn:
            conn.send(junk)
            status, headers, body = conn.response()
            assert status == 400, junk
            assert headers.get("connection") == "close" and b"malformed HTTP request" in body
            assert conn.closed_by_peer()
    for method in ("TRACE", "OPTIONS"):
        resp = httpx.request(method, router.url + CHAT_PATH, timeout=5)
        assert resp.status_code == 405, (method, resp.text)
        assert method in error_of(resp)["message"]
    with RawConn(router.url) as conn:  # no tunnelling either
        conn.send(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        status, _, _ = conn.response()
        assert status in (400, 405)
    assert seen(worker) == []  # none of it was forwarded
    assert chat(router).status_code == 200  # and the router still serves


def test_router_body_limit_and_health(server, logs):
    router = start_router([server.url], logs, "--max-body-bytes", "4096")
    try:
        assert httpx.get(router.url + "/health", timeout=5).json() == {"status": "ok"}
        resp = httpx.post(router.url + "/v1/completions", json={"prompt": "x" * 10_000}, timeout=10)
        assert resp.status_code == 413 and "max_body_bytes" in resp.json()["error"]["message"]
    finally:
        router.stop()


# -- ClientConnection on a real socket, in this test's event loop --------------------------------------------------


class Handler:
    """What the router attaches to a request it proxies (an exchange); here it only counts ``on_gone`` calls."""

    def __init__(self) -> None:
        self.gone = 0

    def on_gone(self) -> None:
        self.gone += 1


class Served:
    """``ClientConnection``s on a listening socket of the running loop. Each request they parse is recorded and,
    unless ``hold``, answered at once with what was parsed; a held one waits for :meth:`answer`."""

    def __init__(self, max_body_bytes: int = 1024, hold: bool = False):
        self.max_body_bytes, self.hold = max_body_bytes, hold
        self.requests: list[Request] = []
        self.handlers: list[Handler] = []
        self.connections: list[ClientConnection] = []

    async def __aenter__(self) -> Served:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: ClientConnection(self.dispatch, self.max_body_bytes, self.connections.append), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.close()
        self.server.close()
        await self.server.wait_closed()

    def dispatch(self, client: ClientConnection, request: Request) -> None:
        request.handler = Handler()
        self.handlers.append(request.handler)
        self.requests.append(request)
        if not self.hold:
            self.answer(client, request)

    @staticmethod
    def answer(client: ClientConnection, request: Request) -> None:
        client.send_json(200, {"method": request.method, "path": request.path, "body": request.body.decode()})

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return int(head[0].split()[1]), headers, body


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(1), 5) == b""


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_a_request_is_parsed_into_method_path_query_headers_and_body():
    async with Served() as srv:
        reader, writer = await srv.connect()
        writer.write(b"POST /v1/reward?recipe=math&x=1 HTTP/1.1\r\nHost: r\r\nX-Affinity-Key: Group-7\r\n"
                     b"content-length: 11\r\n\r\nhello world")
        status, headers, body = await read_response(reader)
        (req,) = srv.requests
        assert (req.method, req.path, req.query, req.body, req.version, req.keep_alive) == (
            "POST", "/v1/reward", "recipe=math&x=1", b"hello world", "1.1", True)
        assert req.header(b"x-affinity-key") == "Group-7" and req.header(b"host") == "r"  # names lower-cased
        assert req.header(b"authorization") is None
        assert status == 200 and headers["content-type"] == "application/json" and "connection" not in headers
        assert json.loads(body) == {"method": "POST", "path": "/v1/reward", "body": "hello world"}
        # A chunked body arrives joined; no query is an empty one.
        writer.write(b"POST /chunked HTTP/1.1\r\nHost: r\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await read_response(reader)
        assert (srv.requests[1].path, srv.requests[1].query, srv.requests[1].body) == ("/chunked", "", b"hello world")
        writer.close()


async def test_keep_alive_unless_the_client_says_close_or_speaks_plain_http_1_0():
    async with Served() as srv:
        reader, writer = await srv.connect()
        for i in range(3):
            writer.write(b"GET /k%d HTTP/1.1\r\nHost: r\r\n\r\n" % i)
            status, headers, _ = await read_response(reader)
            assert status == 200 and "connection" not in headers
        writer.write(b"GET /last HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
        _, headers, _ = await read_response(reader)
        assert headers["connection"] == "close" and await closed_by_peer(reader)
        assert len(srv.connections) == 1 and len(srv.requests) == 4  # all four on one connection

        reader, writer = await srv.connect()
        writer.write(b"GET /old HTTP/1.0\r\n\r\n")
        _, headers, _ = await read_response(reader)
        assert srv.requests[-1].version == "1.0" and srv.requests[-1].keep_alive is False
        assert headers["connection"] == "close" and await closed_by_peer(reader)

        reader, writer = await srv.connect()
        writer.write(b"GET /old-keep HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        _, headers, _ = await read_response(reader)
        assert "connection" not in headers and srv.requests[-1].keep_alive is True
        writer.write(b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")  # still open
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_pipelined_requests_are_handled_one_at_a_time_and_answered_in_order():
    async with Served(hold=True) as srv:
        reader, writer = await srv.connect()
        writer.write(b"".join(b"GET /p%d HTTP/1.1\r\nHost: r\r\n\r\n" % i for i in range(3)))
        await until(lambda: srv.requests, "the first request")
        await asyncio.sleep(0.05)
        assert [r.path for r in srv.requests] == ["/p0"]  # the others wait in the connection's queue
        (conn,) = srv.connections
        for i in range(3):
            Served.answer(conn, srv.requests[i])  # answering one starts the next
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["path"] == f"/p{i}"
        assert [r.path for r in srv.requests] == ["/p0", "/p1", "/p2"]
        writer.close()


async def test_the_body_limit_with_and_without_a_length_and_expect_100_continue():
    async with Served(max_body_bytes=100) as srv:
        # Declared too long: refused before a byte of the body is sent, then the connection is closed.
        reader, writer = await srv.connect()
        writer.write(b"POST /declared HTTP/1.1\r\nHost: r\r\ncontent-length: 101\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert status == 413 and headers["connection"] == "close"
        assert "max_body_bytes" in json.loads(body)["error"]["message"] and json.loads(body)["error"]["param"] == "body"
        assert await closed_by_peer(reader)

        # Exactly the limit passes; with Expect: 100-continue the client is told to go on before it sends.
        reader, writer = await srv.connect()
        writer.write(b"POST /exact HTTP/1.1\r\nHost: r\r\ncontent-length: 100\r\nexpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"x" * 100)
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["body"] == "x" * 100

        # Chunked (no length up front): refused once it passes the limit, and closed.
        reader, writer = await srv.connect()
        writer.write(b"POST /chunked HTTP/1.1\r\nHost: r\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"64\r\n" + b"y" * 100 + b"\r\n1\r\nz\r\n0\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 413 and headers["connection"] == "close" and await closed_by_peer(reader)
        assert [r.path for r in srv.requests] == ["/exact"]  # the refused ones never reached the handler


async def test_malformed_requests_and_upgrades_are_answered_400_and_closed():
    async with Served() as srv:
        for junk, words in ((b"NOT AN HTTP REQUEST\r\n\r\n", "malformed HTTP request"),
                            (b"GET / HTTP/1.1\r\nHost: r\r\ncontent-length: 1x\r\n\r\n", "malformed HTTP request"),
                            (b"GET /ws HTTP/1.1\r\nHost: r\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                             "upgrades are not supported")):
            reader, writer = await srv.connect()
            writer.write(junk)
            status, headers, body = await read_response(reader)
            assert status == 400 and headers["connection"] == "close", junk
            assert words in json.loads(body)["error"]["message"], body
            assert await closed_by_peer(reader)
        assert srv.requests == []


async def test_a_client_that_leaves_is_reported_once_and_its_queued_requests_dropped():
    async with Served(hold=True) as srv:
        _, writer = await srv.connect()
        writer.write(b"GET /a HTTP/1.1\r\nHost: r\r\n\r\nGET /b HTTP/1.1\r\nHost: r\r\n\r\n")
        await until(lambda: srv.requests, "the first request")
        writer.close()  # mid-request: the handler must abort its upstream attempt
        await until(lambda: srv.handlers[0].gone, "on_gone")
        await asyncio.sleep(0.05)
        assert [h.gone for h in srv.handlers] == [1]
        assert [r.path for r in srv.requests] == ["/a"] and srv.connections[0].closed


class Upstream:
    """Stands where the worker connection is: counts the pauses and resumes the client's reading speed asks for."""

    def __init__(self) -> None:
        self.paused = self.resumed = 0

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1


async def test_a_client_that_reads_slowly_pauses_the_worker_stream_until_it_catches_up():
    async with Served(hold=True) as srv:
        reader, writer = await srv.connect()
        writer.write(b"GET /big HTTP/1.1\r\nHost: r\r\n\r\n")
        await until(lambda: srv.requests, "the request")
        (conn,) = srv.connections
        upstream = Upstream()
        conn.paused_by = upstream
        body = b"x" * (32 << 20)  # more than the kernel's socket buffers hold while the client does not read
        conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        conn.write(body)
        assert conn.write_paused and (upstream.paused, upstream.resumed) == (1, 0)
        status, _, got = await read_response(reader)
        assert status == 200 and len(got) == len(body)
        await until(lambda: upstream.resumed, "resume_reading")
        assert not conn.write_paused and (upstream.paused, upstream.resumed) == (1, 1)
        writer.close()


# -- the idle timeout, on a real router ---------------------------------------------------------------------------


def test_idle_and_slowly_sending_connections_are_closed_but_not_busy_ones(procs):
    """The router's reaper closes a connection that has no request in progress for client_idle_timeout_s (the
    bookkeeping is downstream's ``idle_since``): one that never sent a byte, one whose headers never end, and a
    busy one only once its answer is out."""
    worker = procs.echo("idle")
    control(worker, delay_s=1.5)  # three idle limits
    router = procs.router([worker], "--client-idle-timeout-s", "0.5")
    with RawConn(router.url) as busy, RawConn(router.url) as idle, RawConn(router.url) as slow:
        busy.send(post_bytes(CHAT_PATH, json.dumps(CHAT).encode()))
        slow.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: r\r\n")  # and nothing more
        t0 = time.monotonic()
        assert idle.closed_by_peer() and slow.closed_by_peer()
        assert 0.4 <= time.monotonic() - t0 < 3.0
        status, _, body = busy.response()  # in flight for 1.5 s: never reaped meanwhile
        assert status == 200 and json.loads(body)["worker"] == port_of(worker)
        assert time.monotonic() - t0 >= 1.4
        assert busy.closed_by_peer()  # then idle like the others
