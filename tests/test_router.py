"""The minimal router: failover to another worker, no-worker 503, body limit, leak-free in-flight counts."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest

from services.local_stack import free_port
from tests.conftest import start_router, start_script, start_server

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture()
def two_servers(tiny_model, logs):
    servers = [start_server(tiny_model, logs, name=f"fo{i}") for i in range(2)]
    yield servers
    for s in servers:
        s.stop()


def _workers(router_url: str) -> dict[str, dict]:
    return {w["url"]: w for w in httpx.get(router_url + "/workers", timeout=10).json()["workers"]}


def test_dead_worker_fails_over_without_client_errors(two_servers, logs):
    # Health probes far apart: the router learns of the death only from the failed connection.
    router = start_router([s.url for s in two_servers], logs, "--health-interval-s", "60")
    try:
        os.kill(two_servers[0].process.pid, signal.SIGKILL)
        two_servers[0].process.wait()
        statuses = [httpx.post(router.url + "/v1/chat/completions", json=CHAT, timeout=30).status_code
                    for _ in range(10)]
        assert statuses == [200] * 10
        workers = _workers(router.url)
        assert workers[two_servers[0].url]["failures"] >= 1
        assert all(w["in_flight"] == 0 for w in workers.values())
        metrics = httpx.get(router.url + "/metrics", timeout=10).text
        assert float(re.search(r"^genrm_router_retries_total\{reason=\"connect\"\} (\S+)", metrics, re.M).group(1)) >= 1
    finally:
        router.stop()


def test_worker_readmitted_after_it_comes_back(tiny_model, logs):
    server = start_server(tiny_model, logs, name="back")
    router = start_router([server.url], logs, "--health-interval-s", "0.2")
    try:
        server.stop()
        deadline = time.monotonic() + 10
        while httpx.get(router.url + "/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        resp = httpx.post(router.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert "no worker" in resp.json()["error"]["message"]
        port = int(server.url.rsplit(":", 1)[1])
        again = start_server(tiny_model, logs, name="back2", port=port)
        try:
            deadline = time.monotonic() + 10
            while httpx.get(router.url + "/ready", timeout=5).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert httpx.post(router.url + "/v1/chat/completions", json=CHAT, timeout=30).status_code == 200
        finally:
            again.stop()
    finally:
        router.stop()


def test_router_body_limit_and_health(server, logs):
    router = start_router([server.url], logs, "--max-body-bytes", "4096")
    try:
        assert httpx.get(router.url + "/health", timeout=5).json() == {"status": "ok"}
        resp = httpx.post(router.url + "/v1/completions", json={"prompt": "x" * 10_000}, timeout=10)
        assert resp.status_code == 413 and "max_body_bytes" in resp.json()["error"]["message"]
    finally:
        router.stop()


def test_in_flight_released_after_client_disconnects(server, logs):
    router = start_router([server.url], logs)
    try:
        body = {"prompt": "long", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", router.url + "/v1/completions", json=body, timeout=30) as resp:
            lines = resp.iter_lines()  # held: a discarded iterator would close the stream at once
            next(lines)
            assert _workers(router.url)[server.url]["in_flight"] == 1
        deadline = time.monotonic() + 10
        while _workers(router.url)[server.url]["in_flight"] != 0:
            assert time.monotonic() < deadline, "in-flight count leaked"
            time.sleep(0.05)
    finally:
        router.stop()


def test_router_with_no_reachable_worker_is_not_ready(logs):
    router = start_router_unready([f"http://127.0.0.1:{free_port()}"], logs)
    try:
        assert httpx.get(router.url + "/ready", timeout=5).status_code == 503
        resp = httpx.post(router.url + "/v1/chat/completions", json=CHAT, timeout=10)
        assert resp.status_code == 503 and "retry-after" in resp.headers
    finally:
        router.stop()


def start_router_unready(workers: list[str], logs):
    from services.local_stack import spawn

    port = free_port()
    child = spawn(f"router-{port}", f"http://127.0.0.1:{port}",
                  ["route", "--port", str(port), "--workers", *workers, "--log-level", "warning"], log_dir=logs)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(child.url + "/health", timeout=1)
            return child
        except httpx.HTTPError:
            time.sleep(0.1)
    child.stop()
    raise AssertionError("router did not start")


@pytest.fixture()
def bad_worker(logs, request):
    child = start_script("support/bad_worker.py", request.param, log_dir=logs, name=f"bad-{request.param}")
    yield child
    child.stop()


@pytest.mark.parametrize("bad_worker", ["drop"], indirect=True)
def test_worker_dropping_requests_fails_over(bad_worker, server, logs):
    router = start_router([bad_worker.url, server.url], logs, "--health-interval-s", "60")
    try:
        statuses = [httpx.post(router.url + "/v1/chat/completions", json=CHAT, timeout=30).status_code
                    for _ in range(6)]
        assert statuses == [200] * 6
        workers = _workers(router.url)
        assert workers[bad_worker.url]["failures"] >= 1
        assert all(w["in_flight"] == 0 for w in workers.values())
    finally:
        router.stop()


@pytest.mark.parametrize("bad_worker", ["silent"], indirect=True)
def test_silent_worker_gives_a_json_504_not_a_hang(bad_worker, logs):
    router = start_router([bad_worker.url], logs, "--request-timeout-s", "1")
    try:
        t0 = time.monotonic()
        resp = httpx.post(router.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert resp.status_code == 504 and time.monotonic() - t0 < 5
        assert "request_timeout_s" in resp.json()["error"]["message"]
        assert _workers(router.url)[bad_worker.url]["in_flight"] == 0
    finally:
        router.stop()


def test_stream_longer_than_the_idle_timeout_completes(server, logs):
    router = start_router([server.url], logs, "--request-timeout-s", "1")
    try:
        body = {"prompt": "long", "max_tokens": 2500, "ignore_eos": True, "stream": True}
        t0 = time.monotonic()
        with httpx.stream("POST", router.url + "/v1/completions", json=body, timeout=60) as resp:
            events = [line for line in resp.iter_lines() if line.startswith("data: ")]
        assert time.monotonic() - t0 > 1  # it really outlived request_timeout_s
        assert events[-1] == "data: [DONE]" and '"finish_reason": "length"' in events[-2]
        assert _workers(router.url)[server.url]["ready"] is True
    finally:
        router.stop()


def test_client_leaving_through_the_router_frees_the_engine_slot(server, logs):
    router = start_router([server.url], logs)
    try:
        aborted = _server_metric(server.url, "genrm_server_aborted_sequences_total")
        body = {"prompt": "long", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", router.url + "/v1/completions", json=body, timeout=30) as resp:
            lines = resp.iter_lines()
            for _ in range(3):
                next(lines)
        deadline = time.monotonic() + 30
        while _server_metric(server.url, "genrm_server_aborted_sequences_total") == aborted:
            assert time.monotonic() < deadline, "the worker kept generating for a client that left the router"
            time.sleep(0.05)
    finally:
        router.stop()


def _server_metric(url: str, name: str) -> float:
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)", httpx.get(url + "/metrics", timeout=5).text, re.M)
    return float(match.group(1)) if match else 0.0
