"""router/policies/affinity.py: consistent hashing with bounded load, one rule per test on real Worker and
RequestInfo objects (no router, no sockets), then group and header affinity through a real router."""

from __future__ import annotations

import math
import random
from collections import Counter

from router.policies import AffinityConfig
from router.policies.affinity import Affinity
from router.request_info import RequestInfo
from router.workers import Worker
from tests.support import router_calls
from tests.support.policy_inputs import keyed, make_workers, reward
from tests.support.router_calls import answered_by, port_of, seen


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


def test_reward_affinity_keeps_a_group_on_one_worker(echo3, router):
    r = router([e.url for e in echo3])  # --reward-policy defaults to affinity
    same = {answered_by(router_calls.reward(r, group_id=7, question=f"question {i}")) for i in range(8)}
    assert len(same) == 1
    (owner,) = same
    owner_child = next(e for e in echo3 if port_of(e) == owner)
    assert seen(owner_child, "/v1/reward")[-1]["groups"] == [7]
    spread = Counter(answered_by(router_calls.reward(r, group_id=g)) for g in range(12))
    assert len(spread) >= 2
    # Sticky per group, not per moment: asking again gives the same placement.
    again = {g: answered_by(router_calls.reward(r, group_id=g)) for g in range(12)}
    assert again == {g: answered_by(router_calls.reward(r, group_id=g)) for g in range(12)}


def test_affinity_key_header_sticks_on_chat(echo3, router):
    r = router([e.url for e in echo3], "--policy", "affinity")
    key = {"X-Affinity-Key": "session-42"}
    picks = {answered_by(router_calls.chat(r, f"different prompt {i}", headers=key)) for i in range(8)}
    assert len(picks) == 1
    (owner_port,) = picks
    owner = next(e for e in echo3 if port_of(e) == owner_port)
    assert seen(owner, "/v1/chat/completions")[-1]["affinity"] == "session-42"  # forwarded to the worker
    spread = {answered_by(router_calls.chat(r, "same prompt", headers={"X-Affinity-Key": f"k{i}"})) for i in range(12)}
    assert len(spread) >= 2
