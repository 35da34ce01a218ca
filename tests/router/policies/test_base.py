"""router/policies/base.py and the registry (router/policies/__init__.py): every registered policy is created by
name and keeps the interface's contract (it picks one of the workers it is given, never touches their in-flight
counts, and counts its decisions)."""

from __future__ import annotations

import pytest

from router.policies import POLICIES, create_policy
from tests.support.policy_inputs import chat, distinct_prompt, make_workers


def test_registry_has_every_policy() -> None:
    for name in ("least_outstanding", "round_robin", "power_of_two", "affinity", "cache_aware"):
        assert name in POLICIES
        policy = create_policy(name)
        assert policy.name == name


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_returns_one_of_the_workers_and_counts(name: str) -> None:
    ws = make_workers(4)
    policy = create_policy(name)
    for i in range(50):
        for j, w in enumerate(ws):
            w.in_flight = (i * (j + 1)) % 5
        assert policy.select(ws[: 1 + i % 4], chat(distinct_prompt(i, 300))) in ws[: 1 + i % 4]
    assert all(w.in_flight == (49 * (j + 1)) % 5 for j, w in enumerate(ws))  # policies never touch in_flight
    if name != "least_outstanding":
        assert policy.decisions == 50
