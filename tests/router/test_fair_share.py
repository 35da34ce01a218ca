"""Fair share between API keys at the router, against real processes on 127.0.0.1 (router + echo workers).

When every worker slot is taken (``--max-in-flight-per-worker``), waiting requests are served in weighted fair
order per key: a light key is served at the next free slot while a heavy key's backlog drains, weights split the
slots, requests without a key share one class, a full queue pushes out the key over its share, and the per-key
metrics count it all. ``--no-fair-share`` is the FIFO it replaces (the contrast shows the tests can fail).
"""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from common.api_keys import key_id
from services.local_stack import Child
from tests.conftest import wait_for
from tests.router.conftest import Procs
from tests.support.burst import Burst
from tests.support.router_calls import control

CHAT_PATH = "/v1/chat/completions"
HEAVY, LIGHT = "sk-fair-heavy-3c9d1e", "sk-fair-light-77ab20"
HEAVY_ID, LIGHT_ID = key_id(HEAVY), key_id(LIGHT)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def body(tag: str) -> dict:
    """A chat request the echo worker records by ``tag`` (its group_id), so /seen gives the serving order."""
    return {"model": "judge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "group_id": tag}


def served_tags(worker: Child) -> list[str]:
    """The group_id of every request the worker received, in the order it received them."""
    return [s["groups"][0] for s in httpx.get(worker.url + "/seen", timeout=5).json() if s["groups"]]


def key_metrics(router: Child, key: str = HEAVY) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """genrm_router_key_* samples: {(sample name, sorted labels): value}."""
    text = httpx.get(router.url + "/metrics", headers=bearer(key), timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) if family.name.startswith("genrm_router_key_")
            for s in family.samples}


def key_value(metrics: dict, name: str, key: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted({"key": key, **labels}.items()))), 0.0)


def queued(router: Child, key_name: str, auth: str = HEAVY) -> float:
    return key_value(key_metrics(router, auth), "genrm_router_key_queued", key_name)


def chat(router: Child, key: str | None, tag: str) -> tuple[int, float]:
    t0 = time.monotonic()
    resp = httpx.post(router.url + CHAT_PATH, json=body(tag), headers=bearer(key) if key else None, timeout=60)
    return resp.status_code, time.monotonic() - t0


# -- a light key beside a heavy backlog ------------------------------------------------------------


def _heavy_backlog(procs: Procs, *flags: str) -> tuple[Child, Child, Burst]:
    """One echo worker of 2 slots at 50 ms (40 req/s) and a heavy key with 200 requests sent at once."""
    worker = procs.echo("light-heavy", delay_s=0.05)
    router = procs.router([worker], "--max-in-flight-per-worker", "2", "--api-keys", f"{HEAVY},{LIGHT}",
                          "--queue-timeout-s", "60", *flags)
    heavy = Burst(router.url + CHAT_PATH, [body(f"heavy-{i}") for i in range(200)], bearer(HEAVY))
    wait_for(lambda: queued(router, HEAVY_ID) >= 150, "the heavy key's backlog", 20)
    return worker, router, heavy


def test_light_key_is_served_at_the_next_free_slot_while_a_heavy_backlog_drains(procs):
    worker, router, heavy = _heavy_backlog(procs)
    took = []
    for i in range(5):
        status, seconds = chat(router, LIGHT, f"light-{i}")
        assert status == 200
        took.append(seconds)
    left = queued(router, HEAVY_ID, LIGHT)
    # Behind the backlog (FIFO) the first light request would wait >= 150 heavy ones: >= 3.75 s at 40 req/s.
    assert max(took) < 1.5, f"light requests took {took}"
    assert left >= 60, f"the heavy backlog ({left} left) drained before the light requests were served"
    outcomes = heavy.result()
    assert [o.status for o in outcomes] == [200] * 200  # the heavy key lost nothing: it got every other slot
    tags = served_tags(worker)
    assert sorted(t for t in tags if t.startswith("light")) == [f"light-{i}" for i in range(5)]
    m = key_metrics(router)
    assert key_value(m, "genrm_router_key_served_total", HEAVY_ID) == 200
    assert key_value(m, "genrm_router_key_served_total", LIGHT_ID) == 5
    assert key_value(m, "genrm_router_key_queued", HEAVY_ID) == 0
    assert key_value(m, "genrm_router_key_in_flight", HEAVY_ID) == 0


def test_without_fair_share_the_light_key_waits_behind_the_backlog(procs):
    worker, router, heavy = _heavy_backlog(procs, "--no-fair-share")
    ahead = queued(router, HEAVY_ID)
    status, seconds = chat(router, LIGHT, "light-0")
    assert status == 200
    tags = served_tags(worker)
    position = tags.index("light-0")
    # FIFO: every heavy request queued before it was served first.
    assert position >= ahead, f"light served at position {position} with {ahead} heavy requests ahead of it"
    assert seconds >= 0.025 * ahead * 0.9
    heavy.result()


# -- weights ------------------------------------------------------------------------------------------


def test_weights_split_the_served_requests(procs):
    """Keys weighing 2 and 1, both with 60 waiting for one slot: the first 60 served are 40 and 20."""
    worker = procs.echo("weights", delay_s=3.0)
    router = procs.router([worker], "--max-in-flight-per-worker", "1", "--api-keys", f"{HEAVY},{LIGHT}",
                          "--key-weights", f"{HEAVY_ID}=2", "--queue-timeout-s", "60")
    blocker = Burst(router.url + CHAT_PATH, [body("blocker")], bearer(HEAVY))  # holds the only slot for 3 s
    wait_for(lambda: key_value(key_metrics(router), "genrm_router_key_in_flight", HEAVY_ID) == 1, "the blocker", 10)
    a = Burst(router.url + CHAT_PATH, [body(f"a-{i}") for i in range(60)], bearer(HEAVY))
    b = Burst(router.url + CHAT_PATH, [body(f"b-{i}") for i in range(60)], bearer(LIGHT))
    wait_for(lambda: queued(router, HEAVY_ID) == 60 and queued(router, LIGHT_ID) == 60, "both backlogs", 10)
    m = key_metrics(router)
    assert key_value(m, "genrm_router_key_weight", HEAVY_ID) == 2
    assert key_value(m, "genrm_router_key_weight", LIGHT_ID) == 1
    assert key_value(m, "genrm_router_key_in_flight", LIGHT_ID) == 0
    control(worker, delay_s=0.005)
    for burst in (blocker, a, b):
        assert {o.status for o in burst.result()} == {200}
    tags = served_tags(worker)
    assert tags[0] == "blocker" and len(tags) == 121
    first = tags[1:61]
    share = sum(t.startswith("a-") for t in first)
    assert 38 <= share <= 42, f"weight 2 got {share} of the first 60 slots: {first}"
    m = key_metrics(router)
    assert key_value(m, "genrm_router_key_served_total", HEAVY_ID) == 61
    assert key_value(m, "genrm_router_key_served_total", LIGHT_ID) == 60


# -- no key: one class ------------------------------------------------------------------------------


def test_requests_without_a_key_share_one_class_in_arrival_order(procs):
    worker = procs.echo("anonymous", delay_s=3.0)
    router = procs.router([worker], "--max-in-flight-per-worker", "1", "--queue-timeout-s", "60")
    blocker = Burst(router.url + CHAT_PATH, [body("blocker")])
    wait_for(lambda: key_value(key_metrics(router), "genrm_router_key_in_flight", "anonymous") == 1, "blocker", 10)
    first = Burst(router.url + CHAT_PATH, [body(f"x-{i}") for i in range(10)])
    wait_for(lambda: queued(router, "anonymous") == 10, "the first ten to queue", 10)
    second = Burst(router.url + CHAT_PATH, [body(f"y-{i}") for i in range(10)])
    wait_for(lambda: queued(router, "anonymous") == 20, "the second ten to queue", 10)
    control(worker, delay_s=0.005)
    for burst in (blocker, first, second):
        assert {o.status for o in burst.result()} == {200}
    tags = served_tags(worker)[1:]
    assert {t[0] for t in tags[:10]} == {"x"} and {t[0] for t in tags[10:]} == {"y"}, tags
    m = key_metrics(router)
    assert [name for (name, labels) in m if name == "genrm_router_key_served_total"] == [
        "genrm_router_key_served_total"]  # one class: anonymous
    assert key_value(m, "genrm_router_key_served_total", "anonymous") == 21


# -- a full queue -------------------------------------------------------------------------------------


def test_full_queue_pushes_out_the_key_over_its_share_not_a_light_newcomer(procs):
    worker = procs.echo("full", delay_s=2.0)
    router = procs.router([worker], "--max-in-flight-per-worker", "1", "--api-keys", f"{HEAVY},{LIGHT}",
                          "--queue-size", "10", "--queue-timeout-s", "60")
    blocker = Burst(router.url + CHAT_PATH, [body("blocker")], bearer(HEAVY))
    wait_for(lambda: key_value(key_metrics(router), "genrm_router_key_in_flight", HEAVY_ID) == 1, "blocker", 10)
    heavy = Burst(router.url + CHAT_PATH, [body(f"heavy-{i}") for i in range(10)], bearer(HEAVY))
    wait_for(lambda: queued(router, HEAVY_ID) == 10, "the heavy key to fill the queue", 10)
    status, _ = chat(router, HEAVY, "heavy-extra")  # its own key holds the whole queue: refused at once
    assert status == 503
    light = Burst(router.url + CHAT_PATH, [body("light")], bearer(LIGHT))
    wait_for(lambda: queued(router, LIGHT_ID) == 1, "the light request to get a place", 10)
    assert queued(router, HEAVY_ID) == 9
    control(worker, delay_s=0.005)
    assert [o.status for o in light.result()] == [200]
    statuses = sorted(o.status for o in heavy.result())
    assert statuses == [200] * 9 + [503], statuses
    assert blocker.result()[0].status == 200
    m = key_metrics(router)
    assert key_value(m, "genrm_router_key_rejected_total", HEAVY_ID, reason="queue_full") == 1
    assert key_value(m, "genrm_router_key_rejected_total", HEAVY_ID, reason="queue_share") == 1
    assert key_value(m, "genrm_router_key_rejected_total", LIGHT_ID, reason="queue_share") == 0
    assert "light" in served_tags(worker)


# -- rate limits beside fair share ----------------------------------------------------------------------


def test_rate_limits_still_apply_per_key_and_count_under_the_key(procs):
    worker = procs.echo("rate", delay_s=0.0)
    router = procs.router([worker], "--api-keys", f"{HEAVY},{LIGHT}", "--rate-limit-rps", "1",
                          "--rate-limit-burst", "1", "--key-weights", f"{LIGHT_ID}=3")
    assert [chat(router, HEAVY, f"r-{i}")[0] for i in range(3)] == [200, 429, 429]
    assert chat(router, LIGHT, "l-0")[0] == 200  # a bucket of its own, whatever its weight
    time.sleep(1.1)  # the scrape below is rate limited too: let a token come back
    m = key_metrics(router, LIGHT)
    assert key_value(m, "genrm_router_key_rejected_total", HEAVY_ID, reason="rate_limit") == 2
    assert key_value(m, "genrm_router_key_served_total", HEAVY_ID) == 1
    # Keys without a cap: nothing waits at the router, so fair share has nothing to order; the log says so.
    assert "needs --max-in-flight-per-worker" in router.log_tail(50)


# -- a long backlog is read as it is served ---------------------------------------------------------


def test_a_long_backlog_waits_in_the_socket_buffers_and_loses_nothing(procs):
    """A key answered while 32 or more of its requests wait (half the read-ahead, max(64, 2 × slots)) has that
    connection read no further until a request waits on it and fewer than 64 of the key's wait: a second burst on
    the same connections, a pause after the first (a trainer's step), is read as it is served, not all at once."""
    worker = procs.echo("parked", delay_s=0.01)
    router = procs.router([worker], "--max-in-flight-per-worker", "2", "--api-keys", f"{HEAVY},{LIGHT}",
                          "--queue-timeout-s", "60")
    n = 300
    heavy = Burst(router.url + CHAT_PATH, [body(f"heavy-{i}") for i in range(n)], bearer(HEAVY), rounds=2,
                  gap_s=1.0)
    most_parked = most_queued_first = most_queued_second = 0
    parked_in_the_pause = None
    while heavy.done() < 2 * n:
        m = key_metrics(router)
        waiting = key_value(m, "genrm_router_key_queued", HEAVY_ID)
        parked = key_value(m, "genrm_router_key_parked_connections", HEAVY_ID)
        if heavy.done() < n:
            most_queued_first = max(most_queued_first, waiting)
        else:
            parked_in_the_pause = parked if parked_in_the_pause is None else parked_in_the_pause
            most_queued_second = max(most_queued_second, waiting)
        most_parked = max(most_parked, parked)
        time.sleep(0.02)
    outcomes = heavy.result()
    assert [o.status for o in outcomes] == [200] * 2 * n
    assert most_queued_first >= 250, most_queued_first  # new connections: the whole first burst is read at once
    assert most_parked >= 200, most_parked  # answered while 32 or more waited: not read again until needed
    # Read at once: the connections answered while fewer than 32 waited (at the first burst's start and end),
    # the parked rest as it is served, up to the read-ahead of 64 waiting (the pause between the bursts read
    # none of them: they had nothing to say then). A resumed connection counts once its request is read, so the
    # resumptions of one loop turn can overshoot the read-ahead by the answers of that turn (125 seen, where an
    # exact count would stop at 98): the bound allows the read-ahead twice. Reading them all queues ~300.
    assert parked_in_the_pause is not None and parked_in_the_pause >= 200, parked_in_the_pause
    assert most_queued_second <= (n - parked_in_the_pause) + 2 * 64, (most_queued_second, parked_in_the_pause)
    assert key_value(key_metrics(router), "genrm_router_key_served_total", HEAVY_ID) == 2 * n
    # The client closed its connections: the parked ones are let go too.
    wait_for(lambda: key_value(key_metrics(router), "genrm_router_key_parked_connections", HEAVY_ID) == 0,
             "the closed parked connections to be let go", 5)
