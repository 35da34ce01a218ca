"""router/policies/cache_aware.py: prefix reuse, balance and the LRU bound on real Worker and RequestInfo objects,
then a shared prefix through a real router."""

from __future__ import annotations

from collections import Counter

from router.policies import CacheAwareConfig
from router.policies.cache_aware import CacheAware
from router.request_info import RequestInfo
from tests.support import router_calls
from tests.support.policy_inputs import chat, distinct_prompt, make_workers
from tests.support.router_calls import answered_by, port_of


def test_cache_aware_spreads_distinct_sequential_requests_at_zero_load() -> None:
    ws = make_workers(4)
    policy = CacheAware()
    counts = Counter(policy.select(ws, chat(distinct_prompt(i))).url for i in range(20))
    assert set(counts) == {w.url for w in ws}, "piled onto a subset"
    assert max(counts.values()) - min(counts.values()) <= 1


def test_cache_aware_repeated_prefix_returns_to_same_worker() -> None:
    ws = make_workers(4)
    policy = CacheAware()
    shared = "You are a strict grader. " * 60  # 1,500 characters every request below starts with
    home = policy.select(ws, chat(shared + "Answer A"))
    for i in range(12):
        policy.select(ws, chat(distinct_prompt(100 + i)))  # unrelated traffic keeps the rotation moving
        home.in_flight = i % 3  # a little busier than the rest, but not imbalanced
        assert policy.select(ws, chat(shared + f"Answer {i}")) is home
    assert policy.spills == 0


def test_cache_aware_imbalance_sends_to_least_loaded() -> None:
    def case(home_load: int, other_load: int) -> tuple[bool, int]:
        """Cache a prompt on one worker, load the workers so, resend it: (went home?, spills)."""
        ws = make_workers(3)
        policy = CacheAware()
        home = policy.select(ws, chat(distinct_prompt(1)))
        for w in ws:
            w.in_flight = home_load if w is home else other_load
        chosen = policy.select(ws, chat(distinct_prompt(1)))
        return chosen is home, policy.spills

    assert case(8, 0) == (True, 0)  # max - min = 8 is not above cache_balance_abs
    assert case(40, 30) == (True, 0)  # 40 is not above 1.5 × 30
    assert case(20, 0) == (False, 1)  # 20 - 0 > 8 and 20 > 1.5 × 0
    assert case(40, 20) == (False, 1)  # 40 - 20 > 8 and 40 > 1.5 × 20


def test_cache_aware_lru_bound_evicts_oldest() -> None:
    config = CacheAwareConfig(block_chars=16, max_blocks=10)
    policy = CacheAware(config)
    w0, w1 = make_workers(2)

    def prompt(i: int) -> RequestInfo:
        return chat(f"{i:02d}" + "y" * 72)  # "<user>" + 74 characters = 80 = 5 blocks

    for i in range(3):  # only w0 eligible: it gets P0, P1, P2 (15 blocks) into a 10-block LRU
        policy.select([w0], prompt(i))
        assert policy.tree_size(w0.url) <= 10
    assert policy.tree_size(w0.url) == 10
    # w0 busier but not imbalanced: a cached prompt still goes to w0, an evicted one to the idler w1.
    w0.in_flight = 1
    assert policy.select([w0, w1], prompt(2)) is w0
    assert policy.select([w0, w1], prompt(0)) is w1
    for i in range(50):
        policy.select([w0], prompt(i))
        assert policy.tree_size(w0.url) <= 10


def test_cache_aware_empty_text_least_loaded_rotated() -> None:
    ws = make_workers(3)
    policy = CacheAware()
    empty = RequestInfo("/v1/chat/completions", b"not json")
    assert {policy.select(ws, empty).url for _ in range(6)} == {w.url for w in ws}
    ws[0].in_flight = ws[1].in_flight = 1
    assert all(policy.select(ws, empty) is ws[2] for _ in range(5))


def test_cache_aware_forgets_removed_workers_only() -> None:
    ws = make_workers(3)
    policy = CacheAware()
    for i in range(6):
        policy.select(ws, chat(distinct_prompt(i)))
    assert all(policy.tree_size(w.url) for w in ws)
    policy.select(ws[1:], chat("x"))  # ws[0] briefly not eligible (at its cap): its tree is kept
    assert policy.tree_size(ws[0].url)
    policy.forget_after_s = 0.0
    policy.select(ws[:2], chat("y"))  # now absent long enough: ws[2] is forgotten
    assert policy.tree_size(ws[2].url) == 0
    assert policy.tree_size(ws[0].url) and policy.tree_size(ws[1].url)


def test_cache_aware_reuses_a_shared_prefix_and_spreads_distinct_prompts(echo3, router):
    r = router([e.url for e in echo3], "--policy", "cache_aware")
    for n in range(3):
        prefix = f"system prompt #{n}: " + "You are a careful grader of math solutions. " * 40
        first = answered_by(router_calls.chat(r, prefix + "Question A?"))
        second = answered_by(router_calls.chat(r, prefix + "Question B, quite different?"))
        assert first == second, f"prefix {n}: the second request went to another worker than the cached prefix"
    distinct = Counter(answered_by(router_calls.chat(r, f"{i} distinct prompt number {i} " * 3)) for i in range(12))
    assert set(distinct) == {port_of(e) for e in echo3}
