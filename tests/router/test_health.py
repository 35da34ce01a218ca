"""router/health.py: a worker whose probes time out is declared hung and its request handed over; a worker that
comes back is admitted again."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import start_router, start_server, wait_for
from tests.support.metrics_text import metric
from tests.support.router_calls import (
    ANY_MODEL_CHAT,
    answered_by,
    chat,
    control,
    port_of,
    ready_status,
    seen,
    workers_of,
)


def test_hung_worker_hands_its_request_over(echo3, router):
    a, b = echo3[:2]
    r = router([a.url, b.url], "--health-interval-s", "0.2", "--health-timeout-s", "0.3",
               "--health-failure-threshold", "1", "--request-timeout-s", "30")
    handed_over = metric(r, "genrm_router_retries_total", reason="ejected")
    counts = {e.url: len(seen(e)) for e in (a, b)}
    for e in (a, b):
        control(e, delay_s=2.0)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(chat, r, "will hang", timeout=30)
        hung = wait_for(lambda: next((e for e in (a, b) if len(seen(e)) > counts[e.url]), None),
                        "the request to reach a worker", 5)
        other = b if hung is a else a
        for e in (a, b):
            control(e, delay_s=0)  # the hung worker already sleeps 2 s on its request
        os.kill(hung.process.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            resp = pending.result(timeout=30)
            elapsed = time.monotonic() - t0
            assert answered_by(resp) == port_of(other)
            assert elapsed < 2.0, f"hand-over took {elapsed:.2f}s (request_timeout_s is 30)"
            assert metric(r, "genrm_router_retries_total", reason="ejected") - handed_over == 1
            state = workers_of(r)[hung.url]
            assert state["ready"] is False and state["in_flight"] == 0
            assert ready_status(r) == 200  # the other worker still serves
            assert answered_by(chat(r, "meanwhile")) == port_of(other)
        finally:
            os.kill(hung.process.pid, signal.SIGCONT)
    wait_for(lambda: workers_of(r)[hung.url]["ready"], "the resumed worker to be ready again", 5)
    picks = Counter(answered_by(chat(r, f"after {i}")) for i in range(4))
    assert picks[port_of(hung)] >= 1


def test_worker_readmitted_after_it_comes_back(tiny_model, logs):
    server = start_server(tiny_model, logs, name="back")
    router = start_router([server.url], logs, "--health-interval-s", "0.2")
    try:
        server.stop()
        deadline = time.monotonic() + 10
        while httpx.get(router.url + "/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        resp = httpx.post(router.url + "/v1/chat/completions", json=ANY_MODEL_CHAT, timeout=30)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert "no worker" in resp.json()["error"]["message"]
        port = int(server.url.rsplit(":", 1)[1])
        again = start_server(tiny_model, logs, name="back2", port=port)
        try:
            deadline = time.monotonic() + 10
            while httpx.get(router.url + "/ready", timeout=5).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert httpx.post(router.url + "/v1/chat/completions", json=ANY_MODEL_CHAT, timeout=30).status_code == 200
        finally:
            again.stop()
    finally:
        router.stop()
