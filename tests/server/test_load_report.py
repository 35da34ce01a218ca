"""A GenRM server says how busy it is on every answer (``endpoint-load-metrics``), probes included, so that every
router replica learns the load the others put on it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from common.load_report import (
    HEADER,
    IN_FLIGHT,
    IN_FLIGHT_AVG,
    LATENCY_AVG,
    LATENCY_STALE_S,
    RUNNING,
    WAITING,
    parse_report,
)
from services.local_stack import Child
from tests.conftest import wait_for


def report(resp: httpx.Response) -> dict[str, float]:
    return parse_report(resp.headers[HEADER])


def test_every_answer_reports_the_requests_in_flight_and_their_average(fapo_server: Child) -> None:
    """(The fixture's judge timeout is 1 s: the calls stay under it.)"""
    url = fapo_server.url
    idle = report(httpx.get(url + "/ready", timeout=10))
    assert idle[IN_FLIGHT] == 0  # probes are not counted
    assert {RUNNING, WAITING, IN_FLIGHT_AVG, LATENCY_AVG} <= idle.keys()
    body = {"messages": [{"role": "user", "content": "<<sleep:0.7>><<reply:ok>>"}], "max_tokens": 4}
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(httpx.post, url + "/v1/chat/completions", json=body, timeout=30) for _ in range(3)]
        busy = wait_for(lambda: (r := report(httpx.get(url + "/ready", timeout=10)))[IN_FLIGHT] == 3 and r,
                        "the three calls to be in flight", timeout_s=15)
        assert 0 < busy[IN_FLIGHT_AVG] < 3  # averaged over seconds: it rises toward 3
        answers = [c.result() for c in calls]
    for resp in answers:
        assert resp.status_code == 200, resp.text
        assert 1 <= report(resp)[IN_FLIGHT] <= 3  # an answer's report counts the request it answers
        assert 0.5 < report(resp)[LATENCY_AVG] < 5  # ... and its seconds (the judge sleeps 0.7 s)
    assert report(httpx.get(url + "/health", timeout=10))[IN_FLIGHT] == 0


def test_an_idle_server_reports_no_latency_once_its_last_answer_is_old(fapo_server: Child) -> None:
    """The average seconds a request takes describe the recent requests; idle for LATENCY_STALE_S, the server says
    0 (unknown), so a router does not keep shunning it for a slow answer long gone."""
    url = fapo_server.url
    body = {"messages": [{"role": "user", "content": "<<sleep:0.6>><<reply:ok>>"}], "max_tokens": 4}
    answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    answered = time.monotonic()
    assert report(answer)[LATENCY_AVG] > 0.5
    assert report(httpx.get(url + "/ready", timeout=10))[LATENCY_AVG] > 0.5  # still the current figure
    wait_for(lambda: report(httpx.get(url + "/ready", timeout=10))[LATENCY_AVG] == 0,
             "the idle server's latency to read 0", timeout_s=LATENCY_STALE_S + 10)
    assert time.monotonic() - answered > LATENCY_STALE_S - 1
