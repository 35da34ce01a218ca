"""The router's operational features against real processes on 127.0.0.1 (no mocks).

Auth and key hygiene, the admin API (add, drain, remove, URL validation), the wait queue and its
back-pressure, per-key rate limits, the X-GenRM-Timeout deadline, metrics, the body limit, HTTP/1.1
details (keep-alive, pipelining, Expect: 100-continue, malformed requests, methods) and TLS.
Workers are ``tests/support/echo_worker.py`` processes: each answer names the worker's port, ``/control``
makes one slow or failing, ``/seen`` says what it received.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.local_stack import Child, free_port, spawn
from tests.conftest import start_router, start_script, wait_for

CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "judge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
# Distinctive keys: the log check below must not match anything by accident.
CLIENT_KEY = "sk-test-client-7f3a9c2e"
OTHER_CLIENT_KEY = "sk-test-client-other-41d0"
ADMIN_KEY = "sk-test-admin-b81e4d6f"
WORKER_KEY = "sk-test-worker-52c0aa17"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_KEY)
CLIENT = bearer(CLIENT_KEY)
# Tests that need sequential requests spread over two workers rotate: the load-aware default policy may
# mark one echo worker a straggler over sub-millisecond latency noise and send it nothing.
ROTATE = ("--policy", "round_robin")


# -- processes ----------------------------------------------------------------------------------


class Procs:
    """Starts echo workers and routers for one test and stops them all afterwards."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.children: list[Child] = []

    def echo(self, name: str, models: str = "judge") -> Child:
        child = start_script("support/echo_worker.py", "--models", models, log_dir=self.logs, name=f"ops-{name}")
        self.children.append(child)
        return child

    def router(self, workers: list[Child], *flags: str) -> Child:
        child = start_router([w.url for w in workers], self.logs, "--health-interval-s", "0.2", *flags)
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


@pytest.fixture()
def procs(logs: Path) -> Iterator[Procs]:
    p = Procs(logs)
    yield p
    p.stop()


def port_of(child: Child | str) -> int:
    url = child if isinstance(child, str) else child.url
    return int(url.rsplit(":", 1)[1])


def control(worker: Child, **state: Any) -> None:
    assert httpx.post(worker.url + "/control", json=state, timeout=5).status_code == 200


def seen(worker: Child) -> list[dict]:
    return httpx.get(worker.url + "/seen", timeout=5).json()


def chat(router: Child, headers: dict[str, str] | None = None, timeout: float = 30, **kw: Any) -> httpx.Response:
    return httpx.post(router.url + CHAT_PATH, json=CHAT, headers=headers, timeout=timeout, **kw)


def workers_of(router: Child, headers: dict[str, str] | None = None) -> dict[str, dict]:
    resp = httpx.get(router.url + "/workers", headers=headers, timeout=5)
    assert resp.status_code == 200, resp.text
    return {w["url"]: w for w in resp.json()["workers"]}


class Background:
    """A request run in a thread; ``result()`` gives (response, seconds it took)."""

    def __init__(self, fn: Callable[[], httpx.Response]):
        self._fn = fn
        self._out: tuple[httpx.Response, float] | None = None
        self._exc: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            resp = self._fn()
            self._out = (resp, time.monotonic() - t0)
        except BaseException as exc:  # handed to the test thread by result()
            self._exc = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout_s: float = 30.0) -> tuple[httpx.Response, float]:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "background request did not finish"
        if self._exc is not None:
            raise self._exc
        assert self._out is not None
        return self._out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` in a Prometheus text exposition: (labels, value)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            out.append((dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
    return sum(v for lab, v in samples(text, name) if all(lab.get(k) == want for k, want in labels.items()))


def scrape(router: Child, headers: dict[str, str] | None = None) -> str:
    resp = httpx.get(router.url + "/metrics", headers=headers, timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == resp.status_code
    return body["error"]


# -- raw HTTP/1.1 -------------------------------------------------------------------------------


class RawConn:
    """One TCP connection speaking HTTP/1.1 by hand (keep-alive, pipelining, malformed input)."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=timeout_s)
        self.buf = b""

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unparsed: {self.buf[:200]!r}")
        self.buf += chunk

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(lines[0].split()[1]), headers

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def post_bytes(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "host: router", "content-type: application/json",
            f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# -- 1. auth ------------------------------------------------------------------------------------


def test_auth_roles_and_keys_never_reach_workers_or_logs(procs):
    worker = procs.echo("auth")
    router = procs.router([worker], "--api-keys", CLIENT_KEY, "--admin-api-keys", ADMIN_KEY, "--log-level", "info")
    client = bearer(CLIENT_KEY)

    # Probes are public.
    assert httpx.get(router.url + "/health", timeout=5).status_code == 200
    assert httpx.get(router.url + "/ready", timeout=5).status_code == 200

    # Proxied routes: no key / a wrong key -> 401 with a Bearer challenge; the right key -> 200.
    for headers in (None, bearer("sk-test-wrong-0000"), {"authorization": CLIENT_KEY}):
        resp = chat(router, headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "API key" in error_of(resp)["message"]
        assert error_of(resp)["param"] == "authorization"  # as the server names it
    resp = chat(router, client)
    assert resp.status_code == 200 and resp.json()["worker"] == port_of(worker)
    assert chat(router, {"authorization": f"bearer {CLIENT_KEY}"}).status_code == 200  # scheme is case-insensitive

    # Operational routes need a client key.
    for path in ("/metrics", "/workers"):
        assert httpx.get(router.url + path, timeout=5).status_code == 401
        assert httpx.get(router.url + path, headers=bearer("sk-test-wrong-0000"), timeout=5).status_code == 401
        assert httpx.get(router.url + path, headers=client, timeout=5).status_code == 200

    # The admin API needs the admin key; a client key is forbidden, none is unauthenticated.
    assert httpx.get(router.url + "/admin/workers", timeout=5).status_code == 401
    resp = httpx.get(router.url + "/admin/workers", headers=client, timeout=5)
    assert resp.status_code == 403 and "admin key" in error_of(resp)["message"]
    assert error_of(resp)["param"] == "authorization"
    resp = httpx.get(router.url + "/admin/workers", headers=ADMIN, timeout=5)
    assert resp.status_code == 200 and [w["url"] for w in resp.json()["workers"]] == [worker.url]
    assert chat(router, ADMIN).status_code == 200  # an admin key is a client key too

    # The worker never saw the router's keys (nor a rejected request).
    got = seen(worker)
    assert len(got) == 3 and all(s["path"] == CHAT_PATH for s in got)
    assert [s["authorization"] for s in got] == [None, None, None]

    # Nor does the router's log, which does hold access lines (info level).
    router.stop()
    text = router.log_path.read_text(errors="replace")
    assert f"path={CHAT_PATH} status=200" in text, text[-2000:]
    for key in (CLIENT_KEY, ADMIN_KEY, "sk-test-wrong-0000"):
        assert key not in text


def test_worker_api_key_replaces_the_clients_key(procs):
    worker = procs.echo("wkey")
    router = procs.router([worker], "--api-keys", CLIENT_KEY, "--worker-api-key", WORKER_KEY, "--log-level", "info")
    assert chat(router, bearer(CLIENT_KEY)).status_code == 200
    assert [s["authorization"] for s in seen(worker)] == [f"Bearer {WORKER_KEY}"]
    router.stop()
    text = router.log_path.read_text(errors="replace")
    assert "status=200" in text and CLIENT_KEY not in text and WORKER_KEY not in text


def test_without_router_keys_the_clients_authorization_passes_through(procs):
    worker = procs.echo("passthru")
    router = procs.router([worker])
    assert chat(router, bearer("sk-test-for-the-worker-9e1")).status_code == 200
    assert chat(router).status_code == 200
    assert [s["authorization"] for s in seen(worker)] == ["Bearer sk-test-for-the-worker-9e1", None]


def test_admin_key_is_not_forwarded_when_only_admin_keys_are_set(procs):
    worker = procs.echo("admonly")
    router = procs.router([worker], "--admin-api-keys", ADMIN_KEY)
    assert chat(router).status_code == 401  # keys are on: proxied routes need one (the admin key is one)
    assert chat(router, ADMIN).status_code == 200
    assert [s["authorization"] for s in seen(worker)] == [None]


# -- 2./3. admin API ----------------------------------------------------------------------------


def test_admin_api_is_off_without_admin_keys(procs):
    worker = procs.echo("admoff")
    router = procs.router([worker])
    for method in ("GET", "POST", "DELETE"):
        resp = httpx.request(method, router.url + "/admin/workers", json={"url": worker.url}, timeout=5)
        assert resp.status_code == 403, resp.text
        assert "admin_api_keys" in error_of(resp)["message"]
    keyed = procs.router([worker], "--api-keys", CLIENT_KEY)
    resp = httpx.get(keyed.url + "/admin/workers", headers=bearer(CLIENT_KEY), timeout=5)
    assert resp.status_code == 403 and "admin_api_keys" in error_of(resp)["message"]
    assert len(workers_of(router)) == 1  # nothing was added or removed


def _admin_list(router: Child) -> dict[str, dict]:
    resp = httpx.get(router.url + "/admin/workers", headers=ADMIN, timeout=5)
    assert resp.status_code == 200, resp.text
    return {w["url"]: w for w in resp.json()["workers"]}


def test_admin_add_validate_drain_and_remove(procs):
    e1, e2 = procs.echo("adm1"), procs.echo("adm2")
    router = procs.router([e1], "--api-keys", CLIENT_KEY, "--admin-api-keys", ADMIN_KEY, *ROTATE)

    # List.
    listed = _admin_list(router)
    assert list(listed) == [e1.url]
    assert {"url", "in_flight", "breaker", "latency_ewma_ms", "ready", "draining"} <= set(listed[e1.url])
    assert listed[e1.url]["ready"] is True and listed[e1.url]["draining"] is False
    assert listed[e1.url]["in_flight"] == 0 and listed[e1.url]["breaker"] == "closed"

    # Add a second worker by URL: 201, probed at once, then it gets traffic.
    resp = httpx.post(router.url + "/admin/workers", json={"url": e2.url + "/"}, headers=ADMIN, timeout=5)
    assert resp.status_code == 201, resp.text
    assert resp.json()["url"] == e2.url
    wait_for(lambda: _admin_list(router).get(e2.url, {}).get("ready"), "the added worker to become ready", 5)
    ports = {chat(router, CLIENT).json()["worker"] for _ in range(6)}
    assert ports == {port_of(e1), port_of(e2)}
    assert _admin_list(router)[e1.url]["latency_ewma_ms"] > 0

    # Invalid URLs: 422 naming url; nothing is added.
    bad = {
        "ftp://x": "http",
        "http://host/path": "base URL",
        "http://user:pass@127.0.0.1:1": "credentials",
        f"http://127.0.0.1:{port_of(router)}": "points at the router itself",
        f"http://localhost:{port_of(router)}/": "points at the router itself",
        "http://:8000": "no host",
        "http://127.0.0.1:99999": "port",
    }
    for url, words in bad.items():
        resp = httpx.post(router.url + "/admin/workers", json={"url": url}, headers=ADMIN, timeout=5)
        assert resp.status_code == 422, (url, resp.text)
        err = error_of(resp)
        assert err["param"] == "url" and words in err["message"], (url, err)
    resp = httpx.post(router.url + "/admin/workers", json={"url": 5}, headers=ADMIN, timeout=5)
    assert resp.status_code == 422 and error_of(resp)["param"] == "url"
    assert set(_admin_list(router)) == {e1.url, e2.url}

    # Drain the worker that holds a slow request: new requests go to the other; the slow one completes.
    control(e1, delay_s=2.0)
    control(e2, delay_s=2.0)
    slow = Background(lambda: chat(router, CLIENT))
    busy = wait_for(lambda: [u for u, w in _admin_list(router).items() if w["in_flight"] == 1],
                    "the slow request to reach a worker", 5)
    assert len(busy) == 1
    held, other = (e1, e2) if busy[0] == e1.url else (e2, e1)
    control(other, delay_s=0)
    resp = httpx.post(router.url + "/admin/workers/drain", json={"url": held.url}, headers=ADMIN, timeout=5)
    assert resp.status_code == 200 and resp.json()["draining"] is True and resp.json()["in_flight"] == 1
    assert [chat(router, CLIENT).json()["worker"] for _ in range(5)] == [port_of(other)] * 5

    # Removing it while its request is in flight is refused.
    resp = httpx.delete(router.url + "/admin/workers", params={"url": held.url}, headers=ADMIN, timeout=5)
    assert resp.status_code == 409 and "in flight" in error_of(resp)["message"], resp.text
    assert not slow.done(), "the slow request ended before the 409 check: the check proved nothing"

    answer, took = slow.result()
    assert answer.status_code == 200 and answer.json()["worker"] == port_of(held)
    assert took >= 1.9
    assert _admin_list(router)[held.url]["in_flight"] == 0
    assert held.url in _admin_list(router)  # an admin drain waits for DELETE

    resp = httpx.delete(router.url + "/admin/workers", params={"url": held.url}, headers=ADMIN, timeout=5)
    assert resp.status_code == 200 and resp.json() == {"removed": held.url}
    assert list(_admin_list(router)) == [other.url]
    assert chat(router, CLIENT).json()["worker"] == port_of(other)

    resp = httpx.delete(router.url + "/admin/workers", params={"url": held.url}, headers=ADMIN, timeout=5)
    assert resp.status_code == 404 and error_of(resp)["param"] == "url"
    resp = httpx.post(router.url + "/admin/workers/drain", json={"url": "http://127.0.0.1:1"}, headers=ADMIN,
                      timeout=5)
    assert resp.status_code == 404


def test_admin_force_delete_and_re_add_of_a_drained_worker(procs):
    e1, e2 = procs.echo("force1"), procs.echo("force2")
    router = procs.router([e1, e2], "--api-keys", CLIENT_KEY, "--admin-api-keys", ADMIN_KEY, *ROTATE)
    resp = httpx.post(router.url + "/admin/workers/drain", json={"url": e2.url}, headers=ADMIN, timeout=5)
    assert resp.status_code == 200
    assert {chat(router, CLIENT).json()["worker"] for _ in range(4)} == {port_of(e1)}
    resp = httpx.post(router.url + "/admin/workers", json={"url": e2.url}, headers=ADMIN, timeout=5)
    assert resp.status_code == 201 and resp.json()["draining"] is False  # re-adding takes it back
    assert {chat(router, CLIENT).json()["worker"] for _ in range(4)} == {port_of(e1), port_of(e2)}

    control(e1, delay_s=1.0)
    control(e2, delay_s=1.0)
    slow = Background(lambda: chat(router, CLIENT))
    busy = wait_for(lambda: [u for u, w in _admin_list(router).items() if w["in_flight"]], "a request in flight", 5)
    resp = httpx.delete(router.url + "/admin/workers", params={"url": busy[0], "force": "true"}, headers=ADMIN,
                        timeout=5)
    assert resp.status_code == 200
    answer, _ = slow.result()
    assert answer.status_code in (200, 502, 503), answer.text  # its connection was closed under it: any clean answer
    rest = _admin_list(router)
    assert busy[0] not in rest and all(w["in_flight"] == 0 for w in rest.values())


# -- 4. queue -----------------------------------------------------------------------------------


def _queue_depth(router: Child) -> int:
    return httpx.get(router.url + "/workers", timeout=5).json()["queue_depth"]


def _one_slot_taken(procs, name: str, delay_s: float, *flags: str):
    """One echo worker of one slot behind a router, that slot held by a slow request: (worker, router, first)."""
    worker = procs.echo(name)
    control(worker, delay_s=delay_s)
    router = procs.router([worker], "--max-in-flight-per-worker", "1", *flags)
    first = Background(lambda: chat(router))
    wait_for(lambda: workers_of(router)[worker.url]["in_flight"] == 1, "the first request in flight", 5)
    return worker, router, first


def test_queue_serves_one_waiter_and_rejects_past_queue_size(procs):
    worker, router, first = _one_slot_taken(procs, "queue", 1.0, "--queue-size", "1", "--queue-timeout-s", "5")
    before = scrape(router)  # the slow first request is in flight, not counted yet
    second = Background(lambda: chat(router))
    wait_for(lambda: _queue_depth(router) == 1, "the second request to queue", 5)
    assert metric(scrape(router), "genrm_router_queue_depth") == 1

    t0 = time.monotonic()
    third = chat(router)
    assert time.monotonic() - t0 < 0.5  # turned away at once, not after waiting
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert "queue_size" in error_of(third)["message"]

    (a, took_a), (b, took_b) = first.result(), second.result()
    assert a.status_code == 200 and b.status_code == 200
    assert took_a >= 0.95 and took_b >= 1.5  # the second waited for the first, then was served
    assert b.json()["worker"] == port_of(worker)

    after = scrape(router)
    assert metric(after, "genrm_router_queue_depth") == 0
    assert metric(after, "genrm_router_rejected_total", reason="queue_full") - metric(
        before, "genrm_router_rejected_total", reason="queue_full") == 1
    assert workers_of(router)[worker.url]["in_flight"] == 0


def test_queue_timeout_answers_503(procs):
    worker, router, first = _one_slot_taken(procs, "qtimeout", 1.0, "--queue-timeout-s", "0.3")
    t0 = time.monotonic()
    queued = chat(router)
    took = time.monotonic() - t0
    assert queued.status_code == 503 and queued.headers["retry-after"] == "1"
    assert "queue_timeout_s" in error_of(queued)["message"]
    assert 0.25 <= took < 0.9
    a, _ = first.result()
    assert a.status_code == 200
    text = scrape(router)
    assert metric(text, "genrm_router_queue_depth") == 0
    assert metric(text, "genrm_router_rejected_total", reason="queue_timeout") == 1
    assert len(seen(worker)) == 1  # the timed-out request never reached the worker


def test_queued_request_deadline_and_client_leaving_the_queue(procs):
    worker, router, first = _one_slot_taken(procs, "qdeadline", 1.5, "--queue-timeout-s", "10")

    # A client deadline shorter than the queue timeout ends the wait: 504, not a 10 s wait.
    t0 = time.monotonic()
    resp = chat(router, {"x-genrm-timeout": "0.3"})
    assert resp.status_code == 504 and time.monotonic() - t0 < 1.0
    assert "while queued" in error_of(resp)["message"]
    assert _queue_depth(router) == 0

    # A client that gives up while queued leaves the queue (no slot is held for nobody).
    with pytest.raises(httpx.ReadTimeout):
        chat(router, timeout=0.3)
    wait_for(lambda: _queue_depth(router) == 0, "the abandoned request to leave the queue", 5)
    a, _ = first.result()
    assert a.status_code == 200
    assert len(seen(worker)) == 1  # neither queued request reached the worker
    assert chat(router).status_code == 200  # the slot is free again
    assert workers_of(router)[worker.url]["in_flight"] == 0


def test_queue_has_no_head_of_line_blocking_across_models(procs):
    wa, wb = procs.echo("hol-a", models="model-a"), procs.echo("hol-b", models="model-b")
    control(wa, delay_s=3.0)
    control(wb, delay_s=0.5)
    router = procs.router([wa, wb], "--max-in-flight-per-worker", "1", "--queue-timeout-s", "2")

    def ask(model: str) -> Callable[[], httpx.Response]:
        return lambda: httpx.post(router.url + CHAT_PATH, json={**CHAT, "model": model}, timeout=30)

    a1 = Background(ask("model-a"))
    b1 = Background(ask("model-b"))
    wait_for(lambda: all(w["in_flight"] == 1 for w in workers_of(router).values()), "both workers busy", 5)
    a2 = Background(ask("model-a"))
    wait_for(lambda: _queue_depth(router) == 1, "a model-a request queued", 5)
    b2 = Background(ask("model-b"))
    wait_for(lambda: _queue_depth(router) == 2, "a model-b request queued behind it", 5)
    resp, took = b2.result()
    # b1 frees model-b's worker after 0.5 s; b2 should then take 0.5 s more, not wait for model-a's worker
    # (3 s, past its 2 s queue timeout: with the bug it gets a 503).
    assert resp.status_code == 200, resp.text
    assert resp.json()["worker"] == port_of(wb)
    assert took < 2.0, f"the model-b request waited {took:.1f}s behind a model-a request"
    for bg in (a1, b1, a2):
        bg.result()


# -- 5. rate limit ------------------------------------------------------------------------------


def test_rate_limit_is_per_key(procs):
    worker = procs.echo("rate")
    router = procs.router([worker], "--api-keys", f"{CLIENT_KEY},{OTHER_CLIENT_KEY}", "--rate-limit-rps", "2",
                          "--rate-limit-burst", "2")
    with httpx.Client(timeout=10) as c:
        statuses, limited = [], None
        for _ in range(5):
            resp = c.post(router.url + CHAT_PATH, json=CHAT, headers=bearer(CLIENT_KEY))
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                limited = resp
        assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429, 429], statuses
        assert int(limited.headers["retry-after"]) >= 1
        assert "rate_limit_rps" in error_of(limited)["message"]
        # Another key has a bucket of its own.
        assert c.post(router.url + CHAT_PATH, json=CHAT, headers=bearer(OTHER_CLIENT_KEY)).status_code == 200
        # The bucket refills at 2/s.
        time.sleep(0.6)
        assert c.post(router.url + CHAT_PATH, json=CHAT, headers=bearer(CLIENT_KEY)).status_code == 200
    assert len(seen(worker)) == 4  # rejected requests never reached the worker
    assert metric(scrape(router, bearer(OTHER_CLIENT_KEY)), "genrm_router_rejected_total", reason="rate_limit") == 3


def test_rate_limit_without_keys_is_per_client_address(procs):
    worker = procs.echo("rate-ip")
    router = procs.router([worker], "--rate-limit-rps", "1", "--rate-limit-burst", "1")
    statuses = [chat(router).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]


def test_rate_limit_cannot_be_evaded_with_made_up_authorization_headers(procs):
    worker = procs.echo("rate-evade")
    router = procs.router([worker], "--rate-limit-rps", "1", "--rate-limit-burst", "1")
    statuses = [chat(router, bearer(f"made-up-{i}")).status_code for i in range(4)]
    assert statuses.count(429) >= 3, statuses


# -- 6. deadline header -------------------------------------------------------------------------


def test_deadline_header(procs):
    worker = procs.echo("deadline")
    control(worker, delay_s=3.0)
    router = procs.router([worker])
    t0 = time.monotonic()
    resp = chat(router, {"x-genrm-timeout": "0.5"})
    took = time.monotonic() - t0
    assert resp.status_code == 504, resp.text
    assert 0.45 <= took < 2.0
    assert "deadline" in error_of(resp)["message"]
    assert workers_of(router)[worker.url]["in_flight"] == 0

    for bad in ("abc", "0", "-1", "nan"):
        t0 = time.monotonic()
        resp = chat(router, {"x-genrm-timeout": bad})
        assert resp.status_code == 400, (bad, resp.text)
        assert time.monotonic() - t0 < 1.0
        err = error_of(resp)
        assert err["param"] == "x-genrm-timeout" and "x-genrm-timeout" in err["message"]
    assert len(seen(worker)) == 1  # the bad headers were answered by the router itself
    assert workers_of(router)[worker.url]["in_flight"] == 0

    control(worker, delay_s=0.2)
    resp = chat(router, {"x-genrm-timeout": "5"})  # a generous deadline changes nothing
    assert resp.status_code == 200 and resp.json()["worker"] == port_of(worker)
    assert all(s.get("path") == CHAT_PATH for s in seen(worker))


def test_router_deadline_setting_caps_the_header(procs):
    worker = procs.echo("deadline-cap")
    control(worker, delay_s=3.0)
    router = procs.router([worker], "--request-deadline-s", "0.4")
    t0 = time.monotonic()
    resp = chat(router, {"x-genrm-timeout": "60"})  # a client may ask for less, not for more
    assert resp.status_code == 504 and time.monotonic() - t0 < 2.0
    assert "deadline of 0.4s" in error_of(resp)["message"]


# -- 7. metrics ---------------------------------------------------------------------------------


def test_metrics_move(procs):
    e1, e2 = procs.echo("met1"), procs.echo("met2")
    router = procs.router([e1, e2], *ROTATE)
    before = scrape(router)
    n = 6
    ports = [chat(router).json()["worker"] for _ in range(n)]
    after = scrape(router)

    def grew(text_name: str, **labels: str) -> float:
        return metric(after, text_name, **labels) - metric(before, text_name, **labels)

    for w in (e1, e2):
        served = ports.count(port_of(w))
        assert served > 0
        assert grew("genrm_router_requests_total", route=CHAT_PATH, status="200", worker=w.url) == served
    assert grew("genrm_router_requests_total", route=CHAT_PATH) == n
    assert grew("genrm_router_request_latency_seconds_count", route=CHAT_PATH) == n
    assert grew("genrm_router_request_latency_seconds_sum", route=CHAT_PATH) > 0
    in_flight = {lab["worker"]: v for lab, v in samples(after, "genrm_router_worker_in_flight")}
    assert in_flight == {e1.url: 0.0, e2.url: 0.0}
    assert {lab["worker"] for lab, _ in samples(after, "genrm_router_worker_ready")} == {e1.url, e2.url}
    ratios = {lab["policy"]: v for lab, v in samples(after, "genrm_router_affinity_spill_ratio")}
    assert "round_robin" in ratios and all(0.0 <= v <= 1.0 for v in ratios.values())
    assert grew("genrm_router_policy_decisions_total", policy="round_robin") == n

    # A router-made error is counted under its status too.
    control(e1, status=503)
    control(e2, status=503)
    assert chat(router).status_code == 503
    final = scrape(router)
    assert metric(final, "genrm_router_requests_total", route=CHAT_PATH, status="503") == 1


def test_default_policy_decisions_are_counted(procs):
    e1, e2 = procs.echo("dec1"), procs.echo("dec2")
    router = procs.router([e1, e2])
    for _ in range(4):
        assert chat(router).status_code == 200
    assert metric(scrape(router), "genrm_router_policy_decisions_total", policy="least_outstanding") == 4


# -- 8. body limit ------------------------------------------------------------------------------


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


# -- 9. HTTP details ----------------------------------------------------------------------------


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


# -- 10. TLS ------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    if importlib.util.find_spec("cryptography") is not None:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        pkey = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pkey.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(pkey, hashes.SHA256())
        )
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(pkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("neither the cryptography package nor the openssl command is available to make a certificate")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return cert, key


def test_tls(procs, logs, tmp_path):
    cert, key = _self_signed(tmp_path)
    worker = procs.echo("tls")
    port = free_port()
    router = spawn(f"router-tls-{port}", f"https://127.0.0.1:{port}",
                   ["route", "--port", str(port), "--workers", worker.url, "--ssl-certfile", str(cert),
                    "--ssl-keyfile", str(key), "--health-interval-s", "0.2", "--log-level", "warning"], log_dir=logs)
    procs.children.append(router)
    trust = ssl.create_default_context(cafile=str(cert))

    def ready() -> bool:
        assert router.process.poll() is None, f"router exited:\n{router.log_tail()}"
        try:
            return httpx.get(router.url + "/ready", verify=trust, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, "the TLS router to be ready", 30, every_s=0.1)
    with httpx.Client(verify=trust, timeout=10) as c:
        resp = c.post(router.url + CHAT_PATH, json=CHAT)
        assert resp.status_code == 200 and resp.json()["worker"] == port_of(worker)
        assert c.get(router.url + "/workers").json()["workers"][0]["url"] == worker.url
    with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
        httpx.get(router.url + "/health", timeout=5)
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
