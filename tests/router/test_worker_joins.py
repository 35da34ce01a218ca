"""A judge joins mid-run (the HPA scaled the servers up; DNS discovery finds the new pod) while GRPO groups are
in flight.

affinity: a group already placed keeps its worker for its later samples, although the ring now includes the new
worker (a bare consistent-hash ring would move about a third of the keys, and the bounded load, with the old
workers busy and the new one idle, most of them); new groups may use the new worker. least_outstanding: the new
worker takes the next calls until it carries as much as the others; nothing in flight moves. Real processes:
the router, three GenRM servers on 127.0.0.2-4 behind a test DNS server, the scripted judge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from services.local_stack import Child
from tests.conftest import wait_for as wait_until
from tests.support.dns_judges import DnsJudges, fapo_sample

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.4"


@pytest.fixture
def judges(judge: Child, logs: Path, tmp_path: Path) -> Iterator[DnsJudges]:
    cluster = DnsJudges(judge.url, logs, tmp_path)
    try:
        cluster.start_dns()
        for host in (A, B, C):
            cluster.start_server(host)
        cluster.publish(A, B)  # C runs but is not in the Service yet: not ready as far as DNS goes
        yield cluster
    finally:
        cluster.stop()


def _join(judges: DnsJudges) -> None:
    judges.publish(A, B, C)
    wait_until(lambda: judges.routable() == {A, B, C}, "the router to route to the new judge C")


def _all_answered(calls: list[Future[httpx.Response]]) -> None:
    answers = [f.result() for f in calls]
    assert [r.status_code for r in answers] == [200] * len(answers), [r.text for r in answers if r.status_code != 200]
    assert all(r.json()["judge_ok"] is True for r in answers)


def test_affinity_keeps_placed_groups_on_their_workers_when_a_worker_joins(judges: DnsJudges) -> None:
    judges.start_router("--reward-policy", "affinity")
    wait_until(lambda: judges.routable() == {A, B}, "A and B to be routable")
    tag, slow_s, groups = uuid4().hex[:10], 12.0, 8
    calls: list[Future[httpx.Response]] = []

    def send(group: int, member: int) -> str:
        call, host = judges.submit_and_see(fapo_sample(f"join {tag} g{group} m{member}", group, sleep_s=slow_s))
        calls.append(call)
        return host

    placed = {g: send(g, 0) for g in range(groups)}  # each group's first sample picks its worker
    assert all(send(g, 1) == placed[g] for g in range(groups))
    assert set(placed.values()) == {A, B}, placed  # both old workers busy: the new one is the idle one
    _join(judges)
    later = {g: [send(g, m) for m in (2, 3)] for g in range(groups)}
    assert all(hosts == [placed[g]] * 2 for g, hosts in later.items()), (placed, later)  # nothing moved
    new = Counter(send(g, 0) for g in range(100, 112))  # new groups: C may take them, and, idle, it does
    assert new[C] >= 1, new
    _all_answered(calls)
    assert judges.router_metric("genrm_router_retries") == 0


def test_least_outstanding_fills_a_joined_worker_without_moving_calls_in_flight(judges: DnsJudges) -> None:
    judges.start_router("--reward-policy", "least_outstanding")
    wait_until(lambda: judges.routable() == {A, B}, "A and B to be routable")
    tag, slow_s = uuid4().hex[:10], 8.0
    calls: list[Future[httpx.Response]] = []

    def send(i: int) -> str:
        call, host = judges.submit_and_see(fapo_sample(f"join-lo {tag} {i}", i, sleep_s=slow_s))
        calls.append(call)
        return host

    before = Counter(send(i) for i in range(8))
    assert before == {A: 4, B: 4}, before
    _join(judges)
    after = [send(i) for i in range(8, 12)]
    assert after == [C] * 4, after  # the least loaded until it carries what the others do
    assert Counter(send(i) for i in range(12, 15)) == {A: 1, B: 1, C: 1}  # then all three share
    _all_answered(calls)
    assert judges.router_metric("genrm_router_retries") == 0
    served = {h: judges.router_metric("genrm_router_requests", worker=judges.url(h)) for h in (A, B, C)}
    assert served == {A: 5, B: 5, C: 5}, served  # every call finished where it was placed
