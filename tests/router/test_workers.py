"""router/workers.py: the pool marks a straggler by its latency against the median, the mark weighs in the
load-aware policies' choice, and it fades without news."""

from __future__ import annotations

import pytest

from router.policies import create_policy
from router.workers import WorkerPool
from tests.support.policy_inputs import chat, keyed, make_workers


def test_straggler_weighs_its_slowness_and_the_mark_fades() -> None:
    workers = make_workers(4)
    for w in workers:
        w.ready = True
    for w in workers[:3]:
        w.observe_latency(0.05, now=100.0)
    workers[3].observe_latency(0.25, now=100.0)  # 5x the median
    pool = WorkerPool()
    pool.by_url = {w.url: w for w in workers}
    pool.update_slowness(now=100.0)
    assert [w.slowness for w in workers[:3]] == [1.0, 1.0, 1.0]
    assert workers[3].slowness == pytest.approx(25.0)
    # The fast ones carry 10 each: 11 < 25, so least_outstanding and affinity still avoid the straggler.
    for w in workers[:3]:
        w.in_flight = 10
    lo, aff = create_policy("least_outstanding"), create_policy("affinity")
    assert all(lo.select(workers, chat(f"q{i}")) is not workers[3] for i in range(20))
    assert all(aff.select(workers, keyed(f"k{i}")) is not workers[3] for i in range(200))
    pool.update_slowness(now=100.0 + 60)  # a minute without news: tried again
    assert workers[3].slowness < 1.1
    # Ordinary spread (under 2x the median) is not a straggler.
    workers[3].latency_ewma_s = 0.09
    pool.update_slowness(now=200.0)
    assert workers[3].slowness == 1.0
