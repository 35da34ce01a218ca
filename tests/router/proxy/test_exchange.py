"""router/proxy/exchange.py: one proxied request from start to end, against real workers and GenRM servers.

Fail-over to another worker (dead, dropping, silent, 503; a real server killed mid-run on reward routes), what is
forwarded and what is not (500 on OpenAI routes, the router's keys), deadlines (``X-GenRM-Timeout`` and the
router's cap), idle timeouts, and the in-flight slot released when a client leaves; then every way an attempt can
end (answered, retried status, reset, timeout, not JSON, stale keep-alive, unreachable, deadline, client gone, queue
timeout, broken or stalled stream) releases the worker's in-flight slot exactly once.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from services.local_stack import Child
from tests.conftest import start_router, start_script, start_server, wait_for
from tests.support.background import Background
from tests.support.metrics_text import metric
from tests.support.router_calls import (
    ADMIN,
    ADMIN_KEY,
    ANY_MODEL_CHAT,
    CHAT_PATH,
    CLIENT_KEY,
    WORKER_KEY,
    answered_by,
    bearer,
    chat,
    control,
    error_of,
    port_of,
    reward,
    seen,
    workers_of,
)


def test_dead_worker_fails_over_without_client_errors(two_servers, logs):
    # Health probes far apart: the router learns of the death only from the failed connection.
    router = start_router([s.url for s in two_servers], logs, "--health-interval-s", "60")
    try:
        os.kill(two_servers[0].process.pid, signal.SIGKILL)
        two_servers[0].process.wait()
        statuses = [httpx.post(router.url + "/v1/chat/completions", json=ANY_MODEL_CHAT, timeout=30).status_code
                    for _ in range(10)]
        assert statuses == [200] * 10
        workers = workers_of(router.url)
        assert workers[two_servers[0].url]["failures"] >= 1
        assert all(w["in_flight"] == 0 for w in workers.values())
        metrics = httpx.get(router.url + "/metrics", timeout=10).text
        assert float(re.search(r"^genrm_router_retries_total\{reason=\"connect\"\} (\S+)", metrics, re.M).group(1)) >= 1
    finally:
        router.stop()


@pytest.mark.parametrize("bad_worker", ["drop"], indirect=True)
def test_worker_dropping_requests_fails_over(bad_worker, server, logs):
    router = start_router([bad_worker.url, server.url], logs, "--health-interval-s", "60")
    try:
        statuses = [httpx.post(router.url + "/v1/chat/completions", json=ANY_MODEL_CHAT, timeout=30).status_code
                    for _ in range(6)]
        assert statuses == [200] * 6
        workers = workers_of(router.url)
        assert workers[bad_worker.url]["failures"] >= 1
        assert all(w["in_flight"] == 0 for w in workers.values())
    finally:
        router.stop()


@pytest.mark.parametrize("bad_worker", ["silent"], indirect=True)
def test_silent_worker_gives_a_json_504_not_a_hang(bad_worker, logs):
    router = start_router([bad_worker.url], logs, "--request-timeout-s", "1")
    try:
        t0 = time.monotonic()
        resp = httpx.post(router.url + "/v1/chat/completions", json=ANY_MODEL_CHAT, timeout=30)
        assert resp.status_code == 504 and time.monotonic() - t0 < 5
        assert "request_timeout_s" in resp.json()["error"]["message"]
        assert workers_of(router.url)[bad_worker.url]["in_flight"] == 0
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
        assert workers_of(router.url)[server.url]["ready"] is True
    finally:
        router.stop()


def test_in_flight_released_after_client_disconnects(server, logs):
    router = start_router([server.url], logs)
    try:
        body = {"prompt": "long", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", router.url + "/v1/completions", json=body, timeout=30) as resp:
            lines = resp.iter_lines()  # held: a discarded iterator would close the stream at once
            next(lines)
            assert workers_of(router.url)[server.url]["in_flight"] == 1
        deadline = time.monotonic() + 10
        while workers_of(router.url)[server.url]["in_flight"] != 0:
            assert time.monotonic() < deadline, "in-flight count leaked"
            time.sleep(0.05)
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


def test_503_is_retried_on_another_worker(echo3, router):
    a, b = echo3[:2]
    r = router([a.url, b.url])
    control(a, status=503)
    retries = metric(r, "genrm_router_retries_total", reason="503")
    seen_a = len(seen(a))
    assert [answered_by(chat(r, f"q{i}")) for i in range(8)] == [port_of(b)] * 8
    assert [answered_by(reward(r, group_id=g)) for g in range(6)] == [port_of(b)] * 6
    tried_a = len(seen(a)) - seen_a
    assert tried_a >= 1, "worker A was never tried: the retry path was not exercised"
    assert metric(r, "genrm_router_retries_total", reason="503") - retries == tried_a


def test_500_is_forwarded_on_openai_routes_but_retried_on_reward_routes(echo3, router):
    a, b = echo3[:2]
    r = router([a.url, b.url], "--breaker-failure-threshold", "100")  # keep A in rotation throughout
    control(a, status=500)
    retries = metric(r, "genrm_router_retries_total", reason="500")
    chats_at_a = len(seen(a, "/v1/chat/completions"))
    statuses = []
    for i in range(8):
        resp = chat(r, f"q{i}")
        statuses.append(resp.status_code)
        if resp.status_code == 500:
            assert f"worker {port_of(a)} answers 500" in resp.json()["error"]["message"]  # A's own body
        else:
            assert answered_by(resp) == port_of(b)
    assert set(statuses) == {200, 500}
    # Each chat that reached A was answered by A: none was retried.
    assert len(seen(a, "/v1/chat/completions")) - chats_at_a == statuses.count(500)
    assert metric(r, "genrm_router_retries_total", reason="500") == retries

    rewards_at_a = len(seen(a, "/v1/reward"))
    assert [answered_by(reward(r, group_id=g)) for g in range(12)] == [port_of(b)] * 12
    retried = len(seen(a, "/v1/reward")) - rewards_at_a
    assert retried >= 1, "no reward request was placed on worker A first"
    assert metric(r, "genrm_router_retries_total", reason="500") - retries == retried


def test_all_workers_503_forwards_the_last_answer(echo3, router):
    r = router([e.url for e in echo3])
    for e in echo3:
        control(e, status=503)
    ports = {port_of(e) for e in echo3}
    counts = [len(seen(e)) for e in echo3]
    t0 = time.monotonic()
    resp = chat(r, "anyone?")
    assert time.monotonic() - t0 < 3
    assert resp.status_code == 503
    message = resp.json()["error"]["message"]
    assert re.fullmatch(r"worker (\d+) answers 503", message) and int(message.split()[1]) in ports
    assert [len(seen(e)) - c for e, c in zip(echo3, counts, strict=True)] == [1, 1, 1]  # each tried once
    resp = reward(r, group_id=1)
    assert resp.status_code == 503 and resp.json()["error"]["message"].endswith("answers 503")


def test_killing_a_real_server_mid_run_loses_no_reward_request(tiny_model, logs, router):
    # Started from this thread: spawn() sets PR_SET_PDEATHSIG, which fires when the *thread* that forked exits.
    servers = [start_server(tiny_model, logs, name="route-kill0")]
    try:
        servers.append(start_server(tiny_model, logs, name="route-kill1"))
        r = router([s.url for s in servers], "--health-interval-s", "60")  # only failed attempts tell
        done: list[int] = []
        lock = threading.Lock()
        killed = threading.Event()
        victim: list[Child] = []

        def one(i: int) -> httpx.Response:
            if i >= 24:
                killed.wait(30)  # at least 16 requests are sent after the kill
            body = {"recipe": "math", "question": "1+1?", "solution": "\\boxed{2}", "ground_truth": "2",
                    "group_id": i % 5}
            resp = httpx.post(r.url + "/v1/reward", json=body, timeout=30)
            with lock:
                done.append(i)
            return resp

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, i) for i in range(40)]
            wait_for(lambda: len(done) >= 10, "10 completed requests", 30, every_s=0.005)
            served = workers_of(r)
            victim.append(max(servers, key=lambda s: served[s.url]["requests"]))  # the busier one
            os.kill(victim[0].process.pid, signal.SIGKILL)
            killed.set()
            responses = [f.result(timeout=60) for f in futures]
        victim[0].process.wait()
        assert [resp.status_code for resp in responses] == [200] * 40, [resp.text for resp in responses
                                                                         if resp.status_code != 200]
        assert [resp.json()["score"] for resp in responses] == [1.0] * 40
        after = workers_of(r)
        assert after[victim[0].url]["failures"] >= 1, "no request met the dead server: nothing was tested"
        assert all(w["in_flight"] == 0 for w in after.values())
    finally:
        for s in servers:
            s.stop()


def test_worker_api_key_replaces_the_clients_key(procs):
    worker = procs.echo("wkey")
    router = procs.router([worker], "--api-keys", CLIENT_KEY, "--worker-api-key", WORKER_KEY, "--log-level", "info")
    assert chat(router, headers=bearer(CLIENT_KEY)).status_code == 200
    assert [s["authorization"] for s in seen(worker)] == [f"Bearer {WORKER_KEY}"]
    router.stop()
    text = router.log_path.read_text(errors="replace")
    assert "status=200" in text and CLIENT_KEY not in text and WORKER_KEY not in text


def test_without_router_keys_the_clients_authorization_passes_through(procs):
    worker = procs.echo("passthru")
    router = procs.router([worker])
    assert chat(router, headers=bearer("sk-test-for-the-worker-9e1")).status_code == 200
    assert chat(router).status_code == 200
    assert [s["authorization"] for s in seen(worker)] == ["Bearer sk-test-for-the-worker-9e1", None]


def test_admin_key_is_not_forwarded_when_only_admin_keys_are_set(procs):
    worker = procs.echo("admonly")
    router = procs.router([worker], "--admin-api-keys", ADMIN_KEY)
    assert chat(router).status_code == 401  # keys are on: proxied routes need one (the admin key is one)
    assert chat(router, headers=ADMIN).status_code == 200
    assert [s["authorization"] for s in seen(worker)] == [None]


def test_deadline_header(procs):
    worker = procs.echo("deadline")
    control(worker, delay_s=3.0)
    router = procs.router([worker])
    t0 = time.monotonic()
    resp = chat(router, headers={"x-genrm-timeout": "0.5"})
    took = time.monotonic() - t0
    assert resp.status_code == 504, resp.text
    assert 0.45 <= took < 2.0
    assert "deadline" in error_of(resp)["message"]
    assert workers_of(router)[worker.url]["in_flight"] == 0

    for bad in ("abc", "0", "-1", "nan"):
        t0 = time.monotonic()
        resp = chat(router, headers={"x-genrm-timeout": bad})
        assert resp.status_code == 400, (bad, resp.text)
        assert time.monotonic() - t0 < 1.0
        err = error_of(resp)
        assert err["param"] == "x-genrm-timeout" and "x-genrm-timeout" in err["message"]
    assert len(seen(worker)) == 1  # the bad headers were answered by the router itself
    assert workers_of(router)[worker.url]["in_flight"] == 0

    control(worker, delay_s=0.2)
    resp = chat(router, headers={"x-genrm-timeout": "5"})  # a generous deadline changes nothing
    assert resp.status_code == 200 and resp.json()["worker"] == port_of(worker)
    assert all(s.get("path") == CHAT_PATH for s in seen(worker))


def test_router_deadline_setting_caps_the_header(procs):
    worker = procs.echo("deadline-cap")
    control(worker, delay_s=3.0)
    router = procs.router([worker], "--request-deadline-s", "0.4")
    t0 = time.monotonic()
    resp = chat(router, headers={"x-genrm-timeout": "60"})  # a client may ask for less, not for more
    assert resp.status_code == 504 and time.monotonic() - t0 < 2.0
    assert "deadline of 0.4s" in error_of(resp)["message"]


# -- the in-flight slot: released exactly once, whichever way an attempt ends -------------------------------------


def _slots_released(router: Child) -> dict[str, dict]:
    """Wait until no worker has a request in flight, then check every count is exactly 0: a slot never released
    stays at 1, one released twice goes to -1 (and that worker would then be given more than its share)."""
    def settled() -> dict[str, dict] | None:
        now = workers_of(router)
        return now if all(w["in_flight"] <= 0 for w in now.values()) else None

    state = wait_for(settled, "every in-flight slot to be released", 10)
    assert {url: w["in_flight"] for url, w in state.items()} == dict.fromkeys(state, 0)
    return state


@pytest.mark.parametrize(("mode", "route", "reason"), [
    ("drop", "chat", "reset"),  # the connection closes before an answer
    ("silent", "chat", "timeout"),  # no answer within request_timeout_s
    ("garbage", "reward", "malformed"),  # a held-back reward answer that is not JSON
])
def test_a_failed_attempt_releases_its_slot_once_and_the_retry_its_own(procs, echo3, mode, route, reason):
    bad, good = procs.bad(mode), echo3[0]
    router = procs.router([bad, good], "--policy", "round_robin", "--reward-policy", "round_robin",
                          "--request-timeout-s", "1")
    retries = metric(router, "genrm_router_retries_total", reason=reason)
    ask = (lambda: chat(router)) if route == "chat" else (lambda: reward(router, group_id=1))
    assert [answered_by(ask()) for _ in range(2)] == [port_of(good)] * 2  # one of the two starts at the bad one
    state = _slots_released(router)
    assert metric(router, "genrm_router_retries_total", reason=reason) - retries == 1
    assert (state[bad.url]["requests"], state[bad.url]["failures"]) == (1, 1)  # one failure for one attempt
    assert (state[good.url]["requests"], state[good.url]["failures"]) == (2, 0)


@pytest.mark.parametrize(("status", "counted"), [(503, True), (429, False)])
def test_a_retried_status_releases_the_slot_once_and_only_a_429_goes_unblamed(procs, echo3, status, counted):
    busy, good = echo3[:2]
    control(busy, status=status)
    router = procs.router([busy, good], "--policy", "round_robin")
    retries = metric(router, "genrm_router_retries_total", reason=str(status))
    assert [answered_by(chat(router)) for _ in range(2)] == [port_of(good)] * 2
    state = _slots_released(router)
    assert metric(router, "genrm_router_retries_total", reason=str(status)) - retries == 1
    assert (state[busy.url]["requests"], state[busy.url]["failures"]) == (1, 1 if counted else 0)
    assert state[good.url]["requests"] == 2


def test_a_stale_keep_alive_connection_is_retried_on_a_fresh_one_without_blame(procs):
    stale = procs.bad("stale")
    router = procs.router([stale])
    retries = metric(router, "genrm_router_retries_total", reason="stale_connection")
    assert [chat(router).status_code for _ in range(3)] == [200, 200, 200]
    state = _slots_released(router)
    # 1st on a fresh connection; 2nd and 3rd each reuse the pooled one, find it closed unanswered, go again fresh.
    assert metric(router, "genrm_router_retries_total", reason="stale_connection") - retries == 2
    assert (state[stale.url]["requests"], state[stale.url]["failures"]) == (5, 0)


def test_an_unreachable_worker_releases_its_slot_once_and_the_retry_its_own(echo3, logs, router):
    victim = start_script("support/echo_worker.py", log_dir=logs, name="release-victim")
    good = echo3[0]
    r = router([victim.url, good.url], "--policy", "round_robin", "--health-interval-s", "60")
    victim.stop()  # still ready for the router: only a failed connect tells
    retries = metric(r, "genrm_router_retries_total", reason="connect")
    assert [answered_by(chat(r)) for _ in range(2)] == [port_of(good)] * 2
    state = _slots_released(r)
    assert metric(r, "genrm_router_retries_total", reason="connect") - retries == 1
    assert (state[victim.url]["requests"], state[victim.url]["failures"]) == (1, 1)


def test_a_deadline_a_client_leaving_or_a_queue_timeout_release_without_blame(procs):
    worker = procs.echo("released")
    control(worker, delay_s=1.0)
    router = procs.router([worker], "--max-in-flight-per-worker", "1", "--queue-timeout-s", "0.3")
    assert chat(router, headers={"x-genrm-timeout": "0.3"}).status_code == 504  # at the worker past its deadline
    _slots_released(router)
    with pytest.raises(httpx.ReadTimeout):  # the client leaves while its request is at the worker
        chat(router, timeout=0.3)
    _slots_released(router)
    first = Background(lambda: chat(router))
    wait_for(lambda: workers_of(router)[worker.url]["in_flight"] == 1, "the first request in flight", 5)
    assert chat(router).status_code == 503  # queued past queue_timeout_s: it never held a slot
    assert first.result()[0].status_code == 200
    state = _slots_released(router)
    assert (state[worker.url]["requests"], state[worker.url]["failures"]) == (3, 0)


@pytest.mark.parametrize("mode", ["break", "stall"])
def test_a_stream_that_fails_after_its_first_bytes_releases_the_slot_once(procs, mode):
    bad = procs.bad(mode)
    router = procs.router([bad], "--request-timeout-s", "1")
    retries = metric(router, "genrm_router_retries_total")
    body = {"model": "judge", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", router.url + CHAT_PATH, json=body, timeout=10) as resp:
        assert resp.status_code == 200
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[0] == 'data: {"n": 0}' and '"error"' in events[-1]  # the failure is told in-band
    state = _slots_released(router)
    assert (state[bad.url]["requests"], state[bad.url]["failures"]) == (1, 1)
    assert metric(router, "genrm_router_retries_total") == retries  # bytes went out: nothing is retried
