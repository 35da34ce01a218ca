"""router/policies/round_robin.py: on real Worker objects, and through a real router in front of echo workers."""

from __future__ import annotations

from collections import Counter

from router.policies.round_robin import RoundRobin
from tests.support import router_calls
from tests.support.metrics_text import metric
from tests.support.policy_inputs import chat, make_workers
from tests.support.router_calls import answered_by, port_of


def test_round_robin_cycles_over_workers() -> None:
    ws = make_workers(3)
    policy = RoundRobin()
    picks = [policy.select(ws, chat("hi")) for _ in range(9)]
    assert picks == ws * 3
    assert policy.decisions == 9
    # The eligible list can shrink between calls; the pick stays one of those passed.
    assert policy.select(ws[:1], chat("hi")) is ws[0]


def test_round_robin_spreads_sequential_requests_evenly(echo3, router):
    r = router([e.url for e in echo3], "--policy", "round_robin")
    hits = Counter(answered_by(router_calls.chat(r, f"q{i}")) for i in range(9))
    assert hits == {port_of(e): 3 for e in echo3}
    assert metric(r, "genrm_router_policy_decisions_total", policy="round_robin") >= 9
