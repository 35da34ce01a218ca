"""Selection policies, one rule per test, on real Worker and RequestInfo objects (no router, no sockets)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from router.policies import POLICIES, AffinityConfig, CacheAwareConfig, create_policy
from router.policies.affinity import Affinity
from router.policies.cache_aware import CacheAware
from router.policies.power_of_two import PowerOfTwo
from router.policies.round_robin import RoundRobin
from router.request_info import RequestInfo
from router.workers import Worker, WorkerPool


def make_workers(n: int, start: int = 0) -> list[Worker]:
    return [Worker(f"http://worker-{i}:8000") for i in range(start, start + n)]


def chat(content: str, headers: list[tuple[bytes, bytes]] | None = None) -> RequestInfo:
    body = {"model": "judge", "messages": [{"role": "user", "content": content}]}
    return RequestInfo("/v1/chat/completions", json.dumps(body).encode(), headers)


def keyed(key: str) -> RequestInfo:
    return RequestInfo("/v1/chat/completions", b'{"messages": []}', [(b"x-affinity-key", key.encode())])


def reward(group_id: int, question: str) -> RequestInfo:
    body = {"group_id": group_id, "question": question, "response": "42", "label": "42"}
    return RequestInfo("/v1/reward", json.dumps(body).encode())


def test_registry_has_every_policy() -> None:
    for name in ("least_outstanding", "round_robin", "power_of_two", "affinity", "cache_aware"):
        assert name in POLICIES
        policy = create_policy(name)
        assert policy.name == name


# --- round_robin -----------------------------------------------------------------------------------


def test_round_robin_cycles_over_workers() -> None:
    ws = make_workers(3)
    policy = RoundRobin()
    picks = [policy.select(ws, chat("hi")) for _ in range(9)]
    assert picks == ws * 3
    assert policy.decisions == 9
    # The eligible list can shrink between calls; the pick stays one of those passed.
    assert policy.select(ws[:1], chat("hi")) is ws[0]


# --- power_of_two ----------------------------------------------------------------------------------


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


# --- affinity --------------------------------------------------------------------------------------


def mapping(policy: Affinity, ws: list[Worker], keys: list[str]) -> dict[str, str]:
    return {k: policy.select(ws, keyed(k)).url for k in keys}


KEYS = [f"key-{i}" for i in range(2000)]


def test_affinity_same_key_same_worker_at_zero_load() -> None:
    ws = make_workers(5)
    policy = Affinity()
    first = mapping(policy, ws, KEYS[:300])
    assert mapping(policy, ws, KEYS[:300]) == first
    # Another router replica (fresh instance) and another order of the same workers agree.
    assert mapping(Affinity(), list(reversed(ws)), KEYS[:300]) == first
    assert len(set(first.values())) == 5
    assert policy.spills == 0


def test_affinity_removing_a_worker_moves_only_its_keys() -> None:
    ws = make_workers(5)
    before = mapping(Affinity(), ws, KEYS)
    gone = ws[2].url
    after = mapping(Affinity(), [w for w in ws if w.url != gone], KEYS)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved, "the removed worker held keys"
    assert all(before[k] == gone for k in moved)
    assert sum(v == gone for v in before.values()) == len(moved)


def test_affinity_adding_a_worker_moves_only_keys_to_it() -> None:
    ws = make_workers(5)
    before = mapping(Affinity(), ws, KEYS)
    new = make_workers(1, start=5)[0]
    after = mapping(Affinity(), [*ws, new], KEYS)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == new.url for k in moved)
    assert abs(len(moved) / len(KEYS) - 1 / 6) < 0.05


def test_affinity_bounded_load_spills_to_next_on_ring() -> None:
    ws = make_workers(4)
    config = AffinityConfig(load_factor=1.25)
    policy = Affinity(config)
    request = keyed("hot-group")
    preferred = policy.select(ws, request)
    # With the preferred worker gone the key lands on the next worker clockwise (consistent hashing),
    # which is where the bounded-load walk must spill to.
    rest = [w for w in ws if w is not preferred]
    second = Affinity().select(rest, keyed("hot-group"))
    third = Affinity().select([w for w in rest if w is not second], keyed("hot-group"))

    # Each check places the key afresh (a new policy: nothing remembered).
    preferred.in_flight = 3  # bound = ceil(1.25 × 4 / 4) = 2: taking one more would make 4 > 2
    assert Affinity(config).select(ws, keyed("hot-group")) is second
    preferred.in_flight = 1  # bound = ceil(1.25 × 2 / 4) = 1 and 1 + 1 > 1: still spills
    assert Affinity(config).select(ws, keyed("hot-group")) is second
    second.in_flight = 10
    preferred.in_flight = 10  # bound = ceil(1.25 × 21 / 4) = 7
    assert Affinity(config).select(ws, keyed("hot-group")) is third


def test_affinity_keeps_a_burst_of_groups_whole_and_balanced() -> None:
    """A trainer's burst: 32 groups of 8 sent at once. Every group stays on one worker, and the groups are
    spread so no worker holds more than the bound allows at group granularity."""
    ws = make_workers(4)
    policy = Affinity()
    placed: dict[int, set[str]] = {}
    for g in range(32):
        for _ in range(8):
            w = policy.select(ws, reward(g, "q"))
            w.in_flight += 1  # nothing finishes during the burst
            placed.setdefault(g, set()).add(w.url)
    assert all(len(urls) == 1 for urls in placed.values()), "a group was split"
    loads = sorted(w.in_flight for w in ws)
    # A new group goes to a worker at or below the mean (load factor 1.0): workers end within a group or two.
    assert loads[-1] - loads[0] <= 2 * 8, loads


def test_affinity_follows_a_placed_key_only_up_to_the_cap() -> None:
    ws = make_workers(4)
    policy = Affinity()  # affinity_group_cap 16
    home = policy.select(ws, keyed("hot"))
    home.in_flight = 20  # 21 <= bound (ceil(21 / 4) = 6) + 16 = 22: the key still follows
    assert policy.select(ws, keyed("hot")) is home
    home.in_flight = 30  # 31 > ceil(31 / 4) + 16 = 24: spill, and the key moves with it
    moved = policy.select(ws, keyed("hot"))
    assert moved is not home
    home.in_flight = 0
    assert policy.select(ws, keyed("hot")) is moved  # remembered where it went


def test_affinity_places_a_batch_of_whole_groups_by_the_bound_alone() -> None:
    """A per-sample key follows its worker past the bound (the rest of its group is coming); a reward batch
    holds whole groups, so its key is placed by the bound each time and never held to an earlier split."""
    ws = make_workers(2)
    policy = Affinity()

    def chunk(key: str) -> RequestInfo:
        return RequestInfo("/v1/reward/batch", b'{"samples": []}', [(b"x-affinity-key", key.encode())])

    sample_home = policy.select(ws, keyed("s"))
    sample_home.in_flight = 3  # 4 > bound ceil(4 / 2) = 2, but <= 2 + 16: the group's key follows
    assert policy.select(ws, keyed("s")) is sample_home
    sample_home.in_flight = 0
    home = policy.select(ws, chunk("c"))
    assert policy.select(ws, chunk("c")) is home  # consistent hashing: the same worker while it fits
    home.in_flight = 3
    other = next(w for w in ws if w is not home)
    assert policy.select(ws, chunk("c")) is other  # past the bound: the batch goes where there is room
    home.in_flight = 0
    assert policy.select(ws, chunk("c")) is home  # and nothing was remembered: back to the ring's choice


def test_affinity_replaces_a_key_whose_worker_left() -> None:
    ws = make_workers(4)
    policy = Affinity()
    home = policy.select(ws, keyed("k"))
    rest = [w for w in ws if w is not home]
    elsewhere = policy.select(rest, keyed("k"))
    assert elsewhere is not home
    assert policy.select(ws, keyed("k")) is elsewhere  # back in the set, but the key's cache is elsewhere now


def test_affinity_never_above_bound_when_a_worker_below_exists() -> None:
    rng = random.Random(7)
    ws = make_workers(6)
    config = AffinityConfig()
    loaded, idle = Affinity(config), Affinity(config)
    for trial in range(500):
        for w in ws:
            w.in_flight = 0
        key = f"k{trial}"
        preferred = idle.select(ws, keyed(key))
        for w in ws:
            w.in_flight = rng.choice((0, 0, 1, 2, 5, 20))
        total = sum(w.in_flight for w in ws)
        bound = math.ceil(config.load_factor * (total + 1) / len(ws))
        chosen = loaded.select(ws, keyed(key))
        if preferred.in_flight + 1 <= bound:
            assert chosen is preferred  # no spill while the preferred one fits
        else:
            assert chosen.in_flight + 1 <= bound


def test_affinity_counts_spills() -> None:
    ws = make_workers(3)
    policy = Affinity()
    preferred = policy.select(ws, keyed("g"))
    policy.select(ws, keyed("g"))
    assert (policy.spills, policy.decisions) == (0, 2)
    preferred.in_flight = 50
    assert policy.select(ws, keyed("g")) is not preferred
    assert (policy.spills, policy.decisions) == (1, 3)


def test_affinity_keys_reward_samples_by_group_id() -> None:
    ws = make_workers(4)
    policy = Affinity()
    same = {policy.select(ws, reward(7, f"question {i} " * 40)).url for i in range(20)}
    assert len(same) == 1
    spread = Counter(policy.select(ws, reward(g, "the same question")).url for g in range(400))
    assert set(spread) == {w.url for w in ws}
    assert min(spread.values()) > 400 * 0.1


# --- cache_aware -----------------------------------------------------------------------------------


def distinct_prompt(i: int, chars: int = 2000) -> str:
    head = f"Problem {i}: grade this answer. "
    return head + "".join(chr(97 + (i * 7 + j) % 26) for j in range(chars - len(head)))


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


def test_power_of_two_never_prefers_a_marked_straggler_over_a_peer() -> None:
    fast, slow = make_workers(2)
    slow.slowness = 25.0
    fast.in_flight = 40  # past the penalty: a load comparison alone would pick the straggler
    p2c = create_policy("power_of_two")
    assert all(p2c.select([fast, slow], chat(f"q{i}")) is fast for i in range(50))
    slow.slowness = 1.5  # faded below the mark: an ordinary load contest again
    assert p2c.select([fast, slow], chat("q")) is slow
