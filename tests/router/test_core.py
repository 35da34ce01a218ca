"""router/core.py: the wait queue (one waiter served, overflow, timeout, deadlines, no head-of-line blocking
across models) and the model-aware pools that decide which workers a request may go to."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from services.local_stack import Child
from tests.conftest import wait_for
from tests.support.background import Background
from tests.support.metrics_text import metric, scrape
from tests.support.router_calls import (
    CHAT,
    CHAT_PATH,
    answered_by,
    chat,
    control,
    error_of,
    port_of,
    reward,
    seen,
    workers_of,
)


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
    resp = chat(router, headers={"x-genrm-timeout": "0.3"})
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


def test_model_aware_pools(echo3, disrm_worker, router):
    judge = echo3[0]
    r = router([judge.url, disrm_worker.url])
    assert workers_of(r)[disrm_worker.url]["models"] == ["disrm"]
    assert [answered_by(chat(r, f"q{i}", model="disrm")) for i in range(6)] == [port_of(disrm_worker)] * 6
    assert [answered_by(chat(r, f"q{i}", model="judge")) for i in range(6)] == [port_of(judge)] * 6
    resp = chat(r, model="nope")
    assert resp.status_code == 404
    message = resp.json()["error"]["message"]
    assert "nope" in message and "disrm" in message and "judge" in message
    assert resp.json()["error"]["param"] == "model"
    assert [answered_by(reward(r, g, recipe="disrm")) for g in range(6)] == [port_of(disrm_worker)] * 6
    assert [answered_by(reward(r, g, recipe="math")) for g in range(6)] == [port_of(judge)] * 6
    resp = reward(r, 1, recipe="nope")
    assert resp.status_code == 404 and "nope" in resp.json()["error"]["message"]


def test_model_whose_only_worker_is_down_is_not_sent_elsewhere(echo3, disrm_worker, router):
    judge = echo3[0]
    r = router([judge.url, disrm_worker.url], "--health-interval-s", "0.2", "--health-failure-threshold", "1")
    assert answered_by(chat(r, model="disrm")) == port_of(disrm_worker)
    control(disrm_worker, ready=False)
    wait_for(lambda: not workers_of(r)[disrm_worker.url]["ready"], "the disrm worker to be out", 5)
    before = len(seen(judge))
    resp = chat(r, model="disrm")
    rew = reward(r, 1, recipe="disrm")
    assert len(seen(judge)) == before, "a disrm request was sent to the judge-only worker"
    # Served, only not now: a 503 the client retries, not a 404.
    assert resp.status_code == 503 and rew.status_code == 503 and resp.headers["retry-after"]


def test_run_code_without_a_sandbox_server_is_a_404_that_says_where_code_runs(echo3, router):
    """/run_code and recipe=code go only to sandbox servers; a pool of judges alone says how to add one."""
    import httpx

    from tests.conftest import wait_for

    r = router([e.url for e in echo3])
    wait_for(lambda: all(w["recipes"] for w in httpx.get(r.url + "/workers", timeout=5).json()["workers"]),
             "the workers' recipes to be learnt")
    answer = httpx.post(r.url + "/run_code", json={"code": "print(1)", "language": "python"}, timeout=10)
    assert answer.status_code == 404
    assert "genrm serve --recipe code" in answer.json()["error"]["message"]
    assert all(not any(s["path"] == "/run_code" for s in httpx.get(e.url + "/seen", timeout=5).json())
               for e in echo3)
