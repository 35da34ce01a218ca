"""router/fair_queue.py on its own: who gets a freed slot, re-queueing, and the full queue (no processes)."""

from __future__ import annotations

from dataclasses import dataclass

from router.fair_queue import ANONYMOUS, FairQueue, Tenant


@dataclass(eq=False)
class Waiter:
    """What the queue needs of an exchange: the tenant it waits under."""

    tenant: Tenant
    tag: str


def fill(queue: FairQueue, name: str, n: int) -> list[Waiter]:
    waiters = [Waiter(queue.tenant(name), f"{name}-{i}") for i in range(n)]
    for w in waiters:
        assert queue.push(w) == (True, None)
    return waiters


def drain(queue: FairQueue, n: int, can_go=lambda w: True) -> list[str]:
    out = []
    for _ in range(n):
        w = queue.pop(can_go)
        out.append(w.tag if w else None)
    return out


def test_the_key_holding_fewer_slots_goes_first_however_long_the_other_backlog():
    q = FairQueue(["heavy", "light"], {}, limit=100)
    fill(q, "heavy", 50)
    q.tenant("heavy").in_flight = 24
    fill(q, "light", 3)
    q.tenant("light").in_flight = 5
    assert drain(q, 3) == ["light-0", "light-1", "light-2"]
    assert drain(q, 1) == ["heavy-0"]
    assert len(q) == 49 and q.tenant("heavy").queued == 49 and q.tenant("light").queued == 0


def test_with_no_slot_held_weights_split_the_order():
    q = FairQueue(["a", "b"], {"a": 2.0}, limit=100)
    fill(q, "a", 30)
    fill(q, "b", 30)
    first = drain(q, 30)
    assert sum(t.startswith("a") for t in first) == 20


def test_fifo_when_fair_share_is_off():
    q = FairQueue(["a", "b"], {"a": 5.0}, limit=100, fair=False)
    fill(q, "a", 3)
    fill(q, "b", 3)
    q.tenant("a").in_flight = 50
    assert drain(q, 6) == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    assert q.tenant(None) is q.tenants[ANONYMOUS] and q.tenant("unknown") is q.tenants[ANONYMOUS]


def test_a_request_that_cannot_go_does_not_block_the_ones_behind_it():
    q = FairQueue([], {}, limit=100)
    fill(q, ANONYMOUS, 3)
    assert drain(q, 1, can_go=lambda w: w.tag != f"{ANONYMOUS}-0") == [f"{ANONYMOUS}-1"]
    assert drain(q, 1, can_go=lambda w: False) == [None]
    assert len(q) == 2


def test_requeued_waiter_keeps_its_place_and_its_turn():
    q = FairQueue(["a", "b"], {}, limit=100)
    a = fill(q, "a", 2)
    fill(q, "b", 2)
    woken = q.pop(lambda w: True)
    assert woken is a[0]
    assert q.push(woken, front=True) == (True, None)  # no worker after all: back at the head, not charged
    assert drain(q, 4) == ["a-0", "b-0", "a-1", "b-1"]


def test_full_queue_pushes_out_the_newest_of_the_longest_lane_for_a_shorter_one():
    q = FairQueue(["heavy", "light"], {}, limit=4)
    heavy = fill(q, "heavy", 4)
    assert q.push(Waiter(q.tenant("heavy"), "heavy-4")) == (False, None)  # its own lane is the longest
    newcomer = Waiter(q.tenant("light"), "light-0")
    assert q.push(newcomer) == (True, heavy[-1])
    assert len(q) == 4 and q.tenant("heavy").queued == 3 and q.tenant("light").queued == 1
    assert q.remove(heavy[-1]) is False  # already out
    assert q.push(Waiter(q.tenant("light"), "light-1")) == (True, heavy[-2])  # 3 vs 2: still the longer
    assert q.push(Waiter(q.tenant("light"), "light-2")) == (False, None)  # 2 vs 3 with it: no longer over


def test_fifo_full_queue_refuses_the_newcomer():
    q = FairQueue(["heavy", "light"], {}, limit=2, fair=False)
    fill(q, "heavy", 2)
    assert q.push(Waiter(q.tenant("light"), "light-0")) == (False, None)


def test_a_freed_slot_is_kept_only_for_a_key_below_the_waiting_keys_share():
    q = FairQueue(["heavy", "light"], {}, limit=100)
    heavy, light = q.tenant("heavy"), q.tenant("light")
    assert not q.should_hold(light, 32)  # no other key at work: nothing to keep the slot from
    heavy.in_flight = 20
    assert q.should_hold(light, 32)  # nobody waits, but a heavy key is at work and 0 < half of 32
    light.in_flight = 16
    assert not q.should_hold(light, 32)  # its half already
    fill(q, "heavy", 10)
    heavy.in_flight, light.in_flight = 24, 7
    assert q.should_hold(light, 32)  # 7 < 24 and nothing of its own waiting: its next call gets the slot
    for _ in range(17):
        q.hold(light)
    assert light.held == 17 and q.held == 17
    assert not q.should_hold(light, 32)  # 7 + 17 kept = the heavy key's 24: no more than its share
    assert q.release_hold(light) and light.held == 16 and q.held == 16
    fill(q, "light", 1)
    assert not q.should_hold(light, 32)  # it has a request waiting: that one takes the slot through the queue
    assert not q.release_hold(heavy)  # nothing kept for it
    fifo = FairQueue(["heavy", "light"], {}, limit=100, fair=False)
    fill(fifo, "heavy", 10)
    fifo.tenant("heavy").in_flight = 24
    assert not fifo.should_hold(fifo.tenant("light"), 32)  # FIFO keeps nothing for anyone
