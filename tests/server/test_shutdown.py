"""A server's stop signal as Kubernetes sends it on scale-down: ``/ready`` turns 503 at once while the server keeps
serving for ``--shutdown-delay-s``, then it stops listening and gives the calls in flight ``--shutdown-timeout-s``.
Real ``genrm serve`` processes (openai engine in front of the scripted judge, FAPO recipe) on 127.0.0.1."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.local_stack import Child, free_port, spawn, wait_ready
from tests.conftest import wait_for as wait_until
from tests.support.dns_judges import fapo_sample


@pytest.fixture
def start(judge: Child, logs: Path) -> Iterator:
    started: list[Child] = []

    def start_server(*flags: str) -> Child:
        port = free_port()
        child = spawn(f"shutdown-{port}", f"http://127.0.0.1:{port}",
                      ["serve", "--engine", "openai", "--upstream-url", judge.url + "/v1", "--recipe", "fapo",
                       "--port", str(port), "--log-level", "info", *flags], log_dir=logs)
        started.append(child)
        wait_ready(child, time.monotonic() + 60)
        return child

    yield start_server
    for child in started:
        child.stop(5)


def _status(server: Child, path: str) -> int | None:
    """The status of GET ``path``, or None when nothing listens any more (refused, or reset by a listener that
    closed while the probe connected)."""
    try:
        return httpx.get(server.url + path, timeout=2).status_code
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return None


def _running(server: Child) -> float:
    text = httpx.get(server.url + "/metrics", timeout=2).text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "vllm:num_requests_running"
               for s in f.samples)


def _reward(server: Child, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/v1/reward", json=body, timeout=60)


def test_stop_signal_turns_ready_off_keeps_serving_then_finishes_the_calls_in_flight(start) -> None:
    delay = 6.0  # room for the calls during the delay on a loaded machine
    server = start("--shutdown-delay-s", str(delay), "--shutdown-timeout-s", "30")
    with ThreadPoolExecutor(4) as pool:
        slow = pool.submit(_reward, server, fapo_sample("shutdown slow", 1, sleep_s=delay + 3))
        wait_until(lambda: _running(server) == 1, "the call to be in flight")
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert _status(server, "/ready") == 503  # routers' probes take it out now
        assert _status(server, "/health") == 200  # ... but it is alive: no liveness restart
        during = _reward(server, fapo_sample("shutdown during the delay", 2))  # a router that has not noticed yet
        assert during.status_code == 200 and during.json()["judge_ok"] is True
        assert time.monotonic() - signalled < delay
        wait_until(lambda: _status(server, "/health") is None, "the listener to close after the delay",
                   timeout_s=delay + 4)
        assert time.monotonic() - signalled >= delay - 0.2
        answer = slow.result()
        assert answer.status_code == 200 and answer.json()["judge_ok"] is True  # finished, not cut
    assert server.process.wait(10) == -signal.SIGTERM  # exits once done, by the signal it got


def test_calls_past_the_shutdown_timeout_are_cut(start) -> None:
    """The control: the timeout is what lets the calls finish."""
    server = start("--shutdown-delay-s", "0", "--shutdown-timeout-s", "1")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_reward, server, fapo_sample("shutdown cut", 3, sleep_s=8))
        wait_until(lambda: _running(server) == 1, "the call to be in flight")  # so a failure below is a cut
        server.process.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            status = slow.result().status_code  # cancelled inside: 500, which a router retries elsewhere
        except httpx.HTTPError:
            status = None
        assert status != 200
    server.process.wait(10)
    assert time.monotonic() - t0 < 5


def test_a_second_signal_skips_the_delay(start) -> None:
    server = start("--shutdown-delay-s", "60")
    server.process.send_signal(signal.SIGTERM)
    wait_until(lambda: _status(server, "/ready") == 503, "/ready to answer 503")
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(10)
