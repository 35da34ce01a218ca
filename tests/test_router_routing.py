"""The router end to end: policies, retries, breaker, hung and killed workers, model pools, fan-out, streaming, DNS.

Every test runs real processes on 127.0.0.1 (``tests/support/echo_worker.py`` workers that say who answered, real
GenRM servers, ``tests/support/dns_server.py``) behind a real ``genrm route`` process and speaks HTTP with httpx.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.local_stack import Child, free_port, spawn
from tests.conftest import start_router, start_script, start_server
from tests.conftest import wait_for as poll
from tests.test_discovery import DnsServer

Router = Callable[..., Child]


# --- helpers ----------------------------------------------------------------------------------------------------

def port_of(child: Child) -> int:
    return int(child.url.rsplit(":", 1)[1])


def control(worker: Child, **state: Any) -> None:
    httpx.post(worker.url + "/control", json=state, timeout=5).raise_for_status()


def seen(worker: Child, path: str | None = None) -> list[dict]:
    entries = httpx.get(worker.url + "/seen", timeout=5).json()
    return [e for e in entries if path is None or e["path"] == path]


def chat(router: Child, content: str = "hi", model: str = "judge", headers: dict | None = None,
         timeout: float = 10, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(router.url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def reward(router: Child, group_id: int | None = None, recipe: str = "math", question: str = "1+1?",
           timeout: float = 10) -> httpx.Response:
    body: dict[str, Any] = {"recipe": recipe, "question": question, "solution": "\\boxed{2}", "ground_truth": "2"}
    if group_id is not None:
        body["group_id"] = group_id
    return httpx.post(router.url + "/v1/reward", json=body, timeout=timeout)


def answered_by(resp: httpx.Response) -> int:
    assert resp.status_code == 200, resp.text
    return resp.json()["worker"]


def workers_of(router: Child) -> dict[str, dict]:
    return {w["url"]: w for w in httpx.get(router.url + "/workers", timeout=5).json()["workers"]}


def metric(router: Child, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
    total = 0.0
    for line in httpx.get(router.url + "/metrics", timeout=5).text.splitlines():
        m = re.match(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.05) -> Any:
    return poll(predicate, what, timeout_s, step_s)


def ready_status(router: Child) -> int:
    return httpx.get(router.url + "/ready", timeout=5).status_code


# --- fixtures ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def echo_pool(logs: Path) -> Iterator[list[Child]]:
    """Three echo workers serving model ``judge`` and recipes math, fapo, started in parallel."""
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(start_script, "support/echo_worker.py", "--models", "judge", "--recipes", "math,fapo",
                               log_dir=logs, name=f"route-e{i}") for i in range(3)]
        children = [f.result() for f in futures]
    yield children
    for child in children:
        os.kill(child.process.pid, signal.SIGCONT)  # never leave a stopped process behind
        child.stop()


@pytest.fixture()
def echo3(echo_pool: list[Child]) -> Iterator[list[Child]]:
    """The echo workers, healthy and fast at the start and the end of every test."""
    def reset() -> None:
        for child in echo_pool:
            os.kill(child.process.pid, signal.SIGCONT)
            control(child, delay_s=0, status=200, ready=True)

    reset()
    yield echo_pool
    reset()


@pytest.fixture()
def router(logs: Path) -> Iterator[Router]:
    """``router(worker_urls, *flags)`` starts a router; all are stopped at the end of the test."""
    started: list[Child] = []

    def start(workers: list[str], *flags: str) -> Child:
        child = start_router(workers, logs, *flags)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


# --- 1. policies ------------------------------------------------------------------------------------------------

def test_round_robin_spreads_sequential_requests_evenly(echo3, router):
    r = router([e.url for e in echo3], "--policy", "round_robin")
    hits = Counter(answered_by(chat(r, f"q{i}")) for i in range(9))
    assert hits == {port_of(e): 3 for e in echo3}
    assert metric(r, "genrm_router_policy_decisions_total", policy="round_robin") >= 9


def test_least_outstanding_avoids_the_worker_with_a_slow_request(echo3, router):
    r = router([e.url for e in echo3])  # --policy defaults to least_outstanding
    assert httpx.get(r.url + "/workers", timeout=5).json()["policy"] == "least_outstanding"
    before = {port_of(e): len(seen(e)) for e in echo3}
    for e in echo3:
        control(e, delay_s=2.0)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(chat, r, "slow one")
        # The worker that received it: its handler has already read delay_s, so it stays busy for 2 s.
        busy = wait_for(lambda: next((p for p, e in zip(before, echo3, strict=True) if len(seen(e)) > before[p]),
                                     None), 5, "the slow request to reach a worker")
        for e in echo3:
            control(e, delay_s=0)
        t0 = time.monotonic()
        picks = [answered_by(chat(r, f"fast {i}")) for i in range(8)]
        assert time.monotonic() - t0 < 1.5, "the fast requests must finish while the slow one is still in flight"
        assert workers_of(r)[f"http://127.0.0.1:{busy}"]["in_flight"] == 1
        assert busy not in picks
        assert Counter(picks) == {p: 4 for p in before if p != busy}  # the two idle workers alternate
        assert answered_by(slow.result(timeout=10)) == busy


def test_least_outstanding_decisions_are_counted(echo3, router):
    # Guards a bug fixed while this file was written: LeastOutstanding.select never counted its decisions.
    r = router([e.url for e in echo3])
    for i in range(6):
        answered_by(chat(r, f"q{i}"))
    assert metric(r, "genrm_router_policy_decisions_total", policy="least_outstanding") >= 6


def test_reward_affinity_keeps_a_group_on_one_worker(echo3, router):
    r = router([e.url for e in echo3])  # --reward-policy defaults to affinity
    same = {answered_by(reward(r, group_id=7, question=f"question {i}")) for i in range(8)}
    assert len(same) == 1
    (owner,) = same
    owner_child = next(e for e in echo3 if port_of(e) == owner)
    assert seen(owner_child, "/v1/reward")[-1]["groups"] == [7]
    spread = Counter(answered_by(reward(r, group_id=g)) for g in range(12))
    assert len(spread) >= 2
    # Sticky per group, not per moment: asking again gives the same placement.
    again = {g: answered_by(reward(r, group_id=g)) for g in range(12)}
    assert again == {g: answered_by(reward(r, group_id=g)) for g in range(12)}


def test_affinity_key_header_sticks_on_chat(echo3, router):
    r = router([e.url for e in echo3], "--policy", "affinity")
    key = {"X-Affinity-Key": "session-42"}
    picks = {answered_by(chat(r, f"different prompt {i}", headers=key)) for i in range(8)}
    assert len(picks) == 1
    (owner_port,) = picks
    owner = next(e for e in echo3 if port_of(e) == owner_port)
    assert seen(owner, "/v1/chat/completions")[-1]["affinity"] == "session-42"  # forwarded to the worker
    spread = {answered_by(chat(r, "same prompt", headers={"X-Affinity-Key": f"k{i}"})) for i in range(12)}
    assert len(spread) >= 2


def test_cache_aware_reuses_a_shared_prefix_and_spreads_distinct_prompts(echo3, router):
    r = router([e.url for e in echo3], "--policy", "cache_aware")
    for n in range(3):
        prefix = f"system prompt #{n}: " + "You are a careful grader of math solutions. " * 40
        first = answered_by(chat(r, prefix + "Question A?"))
        second = answered_by(chat(r, prefix + "Question B, quite different?"))
        assert first == second, f"prefix {n}: the second request went to another worker than the cached prefix"
    distinct = Counter(answered_by(chat(r, f"{i} distinct prompt number {i} " * 3)) for i in range(12))
    assert set(distinct) == {port_of(e) for e in echo3}


# --- 2. retries -------------------------------------------------------------------------------------------------

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


# --- 3. breaker -------------------------------------------------------------------------------------------------

def test_breaker_ejects_after_threshold_and_closes_after_a_half_open_trial(echo3, router):
    a, b = echo3[:2]
    r = router([a.url, b.url], "--breaker-failure-threshold", "2", "--breaker-backoff-s", "1",
               "--health-interval-s", "60")
    control(a, status=502)
    base = len(seen(a))
    ejections = metric(r, "genrm_router_ejections_total", worker=a.url, cause="breaker")
    for i in range(20):
        assert answered_by(chat(r, f"q{i}")) == port_of(b)
        hits = len(seen(a)) - base
        state = workers_of(r)[a.url]["breaker"]
        if hits >= 2:
            break
        assert state == "closed", f"breaker {state} after only {hits} failure(s)"
    assert hits == 2
    t_open = time.monotonic()
    assert workers_of(r)[a.url]["breaker"] == "open"
    assert metric(r, "genrm_router_ejections_total", worker=a.url, cause="breaker") - ejections == 1

    control(a, status=200)  # fixed at once: only the breaker keeps it out now
    while time.monotonic() < t_open + 0.8:
        assert answered_by(chat(r, "during back-off")) == port_of(b)
        time.sleep(0.02)
    assert len(seen(a)) - base == 2, "worker A got traffic while its breaker was open"

    def closed() -> bool:
        chat(r, "probe").raise_for_status()
        return workers_of(r)[a.url]["breaker"] == "closed"

    wait_for(closed, t_open + 3 - time.monotonic(), "the half-open trial to close the breaker", step_s=0.02)
    assert time.monotonic() - t_open >= 0.8
    picks = Counter(answered_by(chat(r, f"after {i}")) for i in range(6))
    assert picks[port_of(a)] >= 2


# --- 4. a real server killed mid-run ----------------------------------------------------------------------------

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
            wait_for(lambda: len(done) >= 10, 30, "10 completed requests", step_s=0.005)
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


# --- 5. a hung worker -------------------------------------------------------------------------------------------

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
        hung = wait_for(lambda: next((e for e in (a, b) if len(seen(e)) > counts[e.url]), None), 5,
                        "the request to reach a worker")
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
    wait_for(lambda: workers_of(r)[hung.url]["ready"], 5, "the resumed worker to be ready again")
    picks = Counter(answered_by(chat(r, f"after {i}")) for i in range(4))
    assert picks[port_of(hung)] >= 1


# --- 6. model-aware pools ---------------------------------------------------------------------------------------

@pytest.fixture()
def disrm_worker(logs: Path) -> Iterator[Child]:
    child = start_script("support/echo_worker.py", "--models", "disrm", "--recipes", "disrm", log_dir=logs,
                         name="route-disrm")
    yield child
    child.stop()


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
    wait_for(lambda: not workers_of(r)[disrm_worker.url]["ready"], 5, "the disrm worker to be out")
    before = len(seen(judge))
    resp = chat(r, model="disrm")
    rew = reward(r, 1, recipe="disrm")
    assert len(seen(judge)) == before, "a disrm request was sent to the judge-only worker"
    # Served, only not now: a 503 the client retries, not a 404.
    assert resp.status_code == 503 and rew.status_code == 503 and resp.headers["retry-after"]


def test_reward_batch_goes_to_workers_serving_its_recipe(echo3, disrm_worker, router):
    r = router([echo3[0].url, echo3[1].url, disrm_worker.url])
    samples = [{"recipe": "disrm", "group_id": g, "question": "q", "solution": "s", "ground_truth": g}
               for g in range(6)]
    resp = httpx.post(r.url + "/v1/reward/batch", json={"samples": samples}, timeout=10)
    assert resp.status_code == 200
    assert {item["result"]["worker"] for item in resp.json()["results"]} == {port_of(disrm_worker)}
    # Mixed: each recipe's samples only on the workers serving it, results still in order.
    mixed = [{**s, "recipe": "math" if i % 2 else "disrm", "ground_truth": i} for i, s in enumerate(samples * 2)]
    resp = httpx.post(r.url + "/v1/reward/batch", json={"samples": mixed}, timeout=10)
    results = resp.json()["results"]
    assert [item["result"]["score"] for item in results] == [float(i) for i in range(len(mixed))]
    by_recipe = {recipe: {item["result"]["worker"] for item, s in zip(results, mixed, strict=True)
                          if s["recipe"] == recipe} for recipe in ("math", "disrm")}
    assert by_recipe["disrm"] == {port_of(disrm_worker)}
    assert port_of(disrm_worker) not in by_recipe["math"]


# --- 7. reward batch fan-out ------------------------------------------------------------------------------------

BAD_AT = 10


def batch_samples() -> list[dict]:
    """24 samples in 6 groups of 4 (interleaved) plus one bad sample at BAD_AT; ground_truth = position."""
    samples: list[dict] = []
    k = 0
    for pos in range(25):
        if pos == BAD_AT:
            samples.append({"bad": True, "question": "broken", "ground_truth": pos})
            continue
        samples.append({"group_id": f"grp-{k % 6}", "question": f"question of group {k % 6}", "solution": "x",
                        "ground_truth": pos})
        k += 1
    return samples


def check_batch(resp: httpx.Response, samples: list[dict]) -> dict[str, set[int]]:
    """Order, scores and the bad item's error; return group -> workers that scored it."""
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == len(samples)
    assert [item["index"] for item in results] == list(range(len(samples)))
    groups: dict[str, set[int]] = {}
    for pos, (item, sample) in enumerate(zip(results, samples, strict=True)):
        if pos == BAD_AT:
            assert item["result"] is None
            assert item["error"]["param"] == f"samples.{BAD_AT}"
            continue
        assert not item.get("error"), item
        assert item["result"]["score"] == float(pos)
        groups.setdefault(sample["group_id"], set()).add(item["result"]["worker"])
    return groups


def test_reward_batch_fans_out_by_group_and_gathers_in_order(echo3, router):
    r = router([e.url for e in echo3])
    samples = batch_samples()
    counts = {e.url: len(seen(e, "/v1/reward/batch")) for e in echo3}
    fanned = metric(r, "genrm_router_fanout_items_total")
    groups = check_batch(httpx.post(r.url + "/v1/reward/batch", json={"samples": samples}, timeout=10), samples)
    assert len(groups) == 6 and all(len(w) == 1 for w in groups.values()), groups
    used = {p for w in groups.values() for p in w}
    assert len(used) >= 2
    assert metric(r, "genrm_router_fanout_items_total") - fanned == 25
    for e in echo3:  # one sub-batch per worker at most, holding whole groups
        subs = seen(e, "/v1/reward/batch")[counts[e.url]:]
        assert len(subs) <= 1
        if port_of(e) in used:
            assert len(subs) == 1
            assert {g for g in subs[0]["groups"] if g is not None} == {
                g for g, w in groups.items() if port_of(e) in w}

    # One worker answers 503: its sub-batch is retried elsewhere and the batch still completes.
    victim = next(e for e in echo3 if port_of(e) in used)
    control(victim, status=503)
    before = len(seen(victim, "/v1/reward/batch"))
    retries = metric(r, "genrm_router_retries_total", reason="503")
    groups = check_batch(httpx.post(r.url + "/v1/reward/batch", json={"samples": samples}, timeout=10), samples)
    assert len(seen(victim, "/v1/reward/batch")) - before == 1  # it was asked, failed, and its share moved
    assert metric(r, "genrm_router_retries_total", reason="503") - retries == 1
    assert port_of(victim) not in {p for w in groups.values() for p in w}
    assert all(len(w) == 1 for w in groups.values())


def test_reward_batch_with_one_worker_is_passed_through_whole(echo3, router):
    only = echo3[0]
    r = router([only.url])
    samples = batch_samples()
    before = len(seen(only, "/v1/reward/batch"))
    groups = check_batch(httpx.post(r.url + "/v1/reward/batch", json={"samples": samples}, timeout=10), samples)
    assert {p for w in groups.values() for p in w} == {port_of(only)}
    subs = seen(only, "/v1/reward/batch")[before:]
    assert len(subs) == 1 and len(subs[0]["groups"]) == 25
    assert metric(r, "genrm_router_fanout_items_total") == 0


# --- 8. streaming -----------------------------------------------------------------------------------------------

def test_stream_arrives_incrementally(echo3, router):
    r = router([e.url for e in echo3])
    body = {"model": "judge", "messages": [{"role": "user", "content": "stream"}], "stream": True, "chunks": 5,
            "interval_s": 0.2}
    times, events = [], []
    t0 = time.monotonic()
    with httpx.stream("POST", r.url + "/v1/chat/completions", json=body, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                times.append(time.monotonic() - t0)
                events.append(line)
    assert events[-1] == "data: [DONE]" and len(events) == 6
    assert times[0] < 0.5, f"first event after {times[0]:.2f}s: the stream was buffered"
    assert times[-1] >= 0.8
    assert times[-1] - times[0] >= 0.6


# --- 9. DNS discovery -------------------------------------------------------------------------------------------

def start_dns_router(logs: Path, *flags: str) -> Child:
    """A router without --workers (start_router always passes some): wait for /health only."""
    port = free_port()
    child = spawn(f"router-dns-{port}", f"http://127.0.0.1:{port}",
                  ["route", "--port", str(port), "--log-level", "warning", *flags], log_dir=logs)
    try:
        wait_for(lambda: _answers(child), 30, "the router to start")
    except BaseException:
        child.stop()
        raise
    return child


def _answers(child: Child) -> bool:
    assert child.process.poll() is None, f"router exited:\n{child.log_tail()}"
    try:
        return httpx.get(child.url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_dns_discovered_worker_follows_the_records(echo3, logs, tmp_path):
    worker = echo3[0]
    dns = DnsServer(tmp_path / "mapping.json")
    dns.set({"workers.test.": ["127.0.0.1"]})
    dns.start()
    r = None
    try:
        r = start_dns_router(logs, "--discovery-dns", f"dns://workers.test:{port_of(worker)}",
                             "--discovery-nameservers", dns.address, "--discovery-interval-s", "0.2",
                             "--health-interval-s", "0.2")
        wait_for(lambda: ready_status(r) == 200, 5, "the discovered worker to be ready")
        (entry,) = workers_of(r).values()
        assert entry["url"] == worker.url and entry["source"] == "dns"
        assert answered_by(chat(r)) == port_of(worker)

        dns.set({"workers.test.": []})
        t0 = time.monotonic()
        wait_for(lambda: ready_status(r) == 503, 2, "/ready to turn 503 once the records are gone")
        assert time.monotonic() - t0 < 2
        state = workers_of(r)
        assert worker.url not in state or state[worker.url]["draining"] is True
        wait_for(lambda: worker.url not in workers_of(r), 3, "the drained worker to be removed")
        assert chat(r).status_code == 503

        dns.set({"workers.test.": ["127.0.0.1"]})
        wait_for(lambda: ready_status(r) == 200, 3, "the worker to come back with its record")
        assert answered_by(chat(r)) == port_of(worker)
    finally:
        if r is not None:
            r.stop()
        dns.stop()
