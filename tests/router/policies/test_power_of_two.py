"""router/policies/power_of_two.py on real Worker objects: two distinct samples, the less busy (and less slow) wins."""

from __future__ import annotations

from collections import Counter

from router.policies import create_policy
from router.policies.power_of_two import PowerOfTwo
from tests.support.policy_inputs import chat, make_workers


def test_power_of_two_never_picks_the_busier_of_two() -> None:
    idle, busy = make_workers(2)
    busy.in_flight, idle.in_flight = 5, 1
    policy = PowerOfTwo()
    assert all(policy.select([idle, busy], chat("hi")) is idle for _ in range(200))
    assert all(policy.select([busy, idle], chat("hi")) is idle for _ in range(200))
    assert policy.decisions == 400


def test_power_of_two_samples_two_distinct_workers() -> None:
    # Of three, the busiest always meets a less busy one, so it never wins; the middle one wins
    # whenever it is paired with the busiest, so the two are distinct random samples.
    ws = make_workers(3)
    for w, load in zip(ws, (9, 5, 1), strict=True):
        w.in_flight = load
    policy = PowerOfTwo()
    picks = Counter(policy.select(ws, chat("hi")).url for _ in range(600))
    assert ws[0].url not in picks
    assert picks[ws[1].url] > 100 and picks[ws[2].url] > 300


def test_power_of_two_never_prefers_a_marked_straggler_over_a_peer() -> None:
    fast, slow = make_workers(2)
    slow.slowness = 25.0
    fast.in_flight = 40  # past the penalty: a load comparison alone would pick the straggler
    p2c = create_policy("power_of_two")
    assert all(p2c.select([fast, slow], chat(f"q{i}")) is fast for i in range(50))
    slow.slowness = 1.5  # faded below the mark: an ordinary load contest again
    assert p2c.select([fast, slow], chat("q")) is slow
