"""router/proxy/downstream.py: client connections parsed with httptools, answered in order, on a real router.

The body limit (Content-Length, chunked, ``Expect: 100-continue``), keep-alive and pipelining, malformed requests
and unsupported methods (the 405 is the app's answer to what downstream parsed), spoken over raw sockets where
the detail matters.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx

from tests.conftest import start_router
from tests.support.raw_http import RawConn, post_bytes
from tests.support.router_calls import (
    CHAT,
    CHAT_PATH,
    chat,
    error_of,
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
