"""Scale-down that drains a judge, run locally as Kubernetes runs it.

When the HPA lowers the servers' replicas, the endpoints controller drops the pod from the headless Service and the
kubelet SIGTERMs it, both at once. The router (DNS discovery, active probes) must stop sending it new calls before
it stops listening, every call already on it must finish there with 200 (none lost, none re-sent to another
judge), new calls must go to the other judge, and the server must exit once its calls are done.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from services.local_stack import Child
from tests.conftest import wait_for as wait_until
from tests.support.dns_judges import DnsJudges, fapo_sample

A, B = "127.0.0.2", "127.0.0.3"
DELAY_S = 3.0  # the servers keep serving this long after SIGTERM, /ready answering 503
SLOW_S = 8.0  # judge time of the calls in flight when A is removed: far past the delay
CALLS = 16


@pytest.fixture
def judges(judge: Child, logs: Path, tmp_path: Path) -> Iterator[DnsJudges]:
    cluster = DnsJudges(judge.url, logs, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_judge_removed_by_scale_down_finishes_its_calls(judges: DnsJudges, judge: Child) -> None:
    judges.start_dns()
    for host in (A, B):
        judges.start_server(host, "--shutdown-delay-s", str(DELAY_S), "--shutdown-timeout-s", "60")
    judges.publish(A, B)
    judges.start_router()
    wait_until(lambda: judges.routable() == {A, B}, "both judges to be routable")

    tag = uuid4().hex[:10]
    slow = [judges.submit(fapo_sample(f"drain {tag} {i}", group_id=i, sleep_s=SLOW_S)) for i in range(CALLS)]
    on = wait_until(lambda: (f := judges.in_flight()) and sum(f.values()) == CALLS and f, "every call in flight")
    assert on[A] >= 1 and on[B] >= 1, on

    # The pod is deleted: out of the Service's records and signalled in the same instant.
    judges.publish(B)
    judges.sigterm(A)
    signalled = time.monotonic()
    now = judges.reward(fapo_sample(f"drain {tag} now", group_id=1000))  # may still land on A: its delay serves it
    assert now.status_code == 200 and now.json()["judge_ok"] is True, now.text
    wait_until(lambda: A not in judges.routable(), "the router to stop routing to A", timeout_s=DELAY_S)
    assert time.monotonic() - signalled < DELAY_S, "A stopped listening before the router stopped sending to it"
    assert judges.servers[A].process.poll() is None  # still finishing its calls
    served_by_a_so_far = judges.router_metric("genrm_router_requests", worker=judges.url(A))  # only `now`, if any

    new = [judges.submit(fapo_sample(f"drain {tag} new {i}", group_id=2000 + i)) for i in range(8)]
    answers = [f.result() for f in slow + new]
    assert [r.status_code for r in answers] == [200] * len(answers), [r.text for r in answers if r.status_code != 200]
    assert all(r.json()["judge_ok"] is True for r in answers)  # judged, not a timeout's fallback score

    # Each call on A finished on A: A answered exactly its calls in flight (and `now` if it got it), nothing was
    # retried, and the judge saw every prompt once. The new calls all went to B.
    by_worker = {host: judges.router_metric("genrm_router_requests", worker=judges.url(host)) for host in (A, B)}
    assert by_worker[A] == on[A] + served_by_a_so_far, by_worker
    assert by_worker[B] == on[B] + (1 - served_by_a_so_far) + len(new), by_worker
    assert judges.router_metric("genrm_router_retries") == 0
    prompts = Counter(p.split(f"drain {tag} ")[1].split(" <<")[0].split("\n")[0]
                      for p in httpx.get(judge.url + "/prompts", timeout=5).json() if f"drain {tag} " in p)
    assert len(prompts) == CALLS + 1 + len(new) and set(prompts.values()) == {1}, prompts

    # A exits once its calls are done (well before its 60 s limit), and the router forgets it.
    wait_until(lambda: judges.servers[A].process.poll() is not None, "A to exit", timeout_s=10)
    wait_until(lambda: judges.url(A) not in judges.workers(), "the router to remove A", timeout_s=5)
    assert judges.servers[B].process.poll() is None
