"""Affinity across router replicas, one rule per test, on real Worker and RequestInfo objects (no sockets).

Each ``Affinity`` instance stands for one replica: placements must come out alike from views that are alike,
whatever each replica sent itself.
"""

from __future__ import annotations

import random

import pytest

from router.policies.affinity import Affinity, AffinityConfig
from router.request_info import RequestInfo
from router.workers import MIN_LOAD, Worker, WorkerPool

KEYS = [f"g:{i}" for i in range(4000)]


def keyed(key: str) -> RequestInfo:
    return RequestInfo("/v1/chat/completions", b'{"messages": []}', [(b"x-affinity-key", key.encode())])


def replica_view(loads: list[float], in_flight: list[int] | None = None, shared: bool = True) -> list[Worker]:
    """One replica's workers: the averaged loads the workers reported, and its own requests on them."""
    workers = [Worker(f"http://worker-{i}:8000") for i in range(len(loads))]
    for i, w in enumerate(workers):
        w.load, w.shared = loads[i], shared
        w.in_flight = in_flight[i] if in_flight else 0
    return workers


def places(workers: list[Worker], policy: Affinity | None = None) -> dict[str, str]:
    policy = policy or Affinity()
    return {k: policy.select(workers, keyed(k)).url for k in KEYS}


def agreement(a: dict[str, str], b: dict[str, str]) -> float:
    return sum(a[k] == b[k] for k in KEYS) / len(KEYS)


def test_replicas_with_nearby_views_place_nearly_every_key_alike() -> None:
    rng = random.Random(1)
    reported = [120.0, 95.0, 100.0, 110.0]
    views = [[x * (1 + rng.uniform(-0.05, 0.05)) for x in reported] for _ in range(3)]  # heard at other moments
    # Each replica's own share differs a lot (a third of the load each, unevenly): it must not matter.
    own = [[rng.randrange(0, 60) for _ in reported] for _ in range(3)]
    placed = [places(replica_view(v, o)) for v, o in zip(views, own, strict=True)]
    assert agreement(placed[0], placed[1]) >= 0.99
    assert agreement(placed[0], placed[2]) >= 0.99
    # The same replicas bounding by their own counts (one alone would): far apart.
    hard = [places(replica_view(v, o, shared=False)) for v, o in zip(views, own, strict=True)]
    assert agreement(hard[0], hard[1]) < 0.9


def test_a_restarted_replica_places_as_before() -> None:
    view = [80.0, 130.0, 100.0, 90.0]
    before = places(replica_view(view, [30, 50, 10, 20]))
    after = places(replica_view(view))  # a fresh instance, nothing in flight, nothing remembered
    assert after == before


def test_an_overloaded_worker_keeps_no_new_key_and_they_go_clockwise() -> None:
    view = [100.0, 100.0, 100.0, 500.0]  # the last is over the mean (200) by more than spill_width × the mean
    workers = replica_view(view)
    placed = places(workers)
    assert workers[3].url not in placed.values()
    # Each of its keys went where the ring sends the key without it: the next worker clockwise.
    without = places(workers[:3])
    ring = places(replica_view([100.0] * 4))
    assert all(placed[k] == without[k] for k in KEYS if ring[k] == workers[3].url)
    assert all(placed[k] == ring[k] for k in KEYS if ring[k] != workers[3].url)


def test_a_worker_a_little_over_the_mean_keeps_almost_all_its_keys() -> None:
    ring = places(replica_view([100.0] * 4))
    workers = replica_view([112.0, 96.0, 96.0, 96.0])  # 12 % over the mean of 100
    placed = places(workers)
    own = [k for k in KEYS if ring[k] == workers[0].url]
    kept = sum(placed[k] == workers[0].url for k in own) / len(own)
    assert 0.97 <= kept < 1.0  # 1 - 0.12², drawn by key: some keys, the same on every replica
    far = replica_view([160.0, 80.0, 80.0, 80.0])  # 60 % over: 1 - 0.6² = 64 %
    far_placed = places(far)
    far_kept = sum(far_placed[k] == far[0].url for k in own) / len(own)
    assert 0.55 <= far_kept <= 0.73


def test_a_straggler_is_marked_alike_on_every_replica_from_its_reports() -> None:
    """Each replica times the answers it gets in its own way; the seconds a request takes as the worker reports it
    are the same for all, so all mark the straggler alike, and none gives it a new key."""
    placed = []
    for local_ms in ((50, 50, 50, 60), (50, 120, 50, 300)):
        workers = replica_view([40.0, 40.0, 40.0, 12.0])
        pool = WorkerPool()
        pool.by_url = {w.url: w for w in workers}
        for w, ms, reported_s in zip(workers, local_ms, (0.05, 0.05, 0.05, 0.25), strict=True):
            w.ready = True
            w.observe_latency(ms / 1000, now=100.0)
            w.learn_load(None, w.load, reported_s, now=100.0)
        pool.update_slowness(now=100.0)
        assert [w.slowness for w in workers] == [1.0, 1.0, 1.0, pytest.approx(25.0)]
        placed.append(places(workers))
    assert placed[0] == placed[1]
    assert workers[3].url not in placed[0].values()


def test_a_worker_that_reports_no_current_latency_is_no_longer_a_straggler() -> None:
    """A server idle for a while reports its latency as 0 (unknown): an old slow answer must not keep it marked on a
    replica that has never timed it itself (a fresh one, say)."""
    workers = replica_view([0.0, 0.0])
    pool = WorkerPool()
    pool.by_url = {w.url: w for w in workers}
    for w, reported_s in zip(workers, (0.05, 4.0), strict=True):
        w.ready = True
        w.learn_load(0, 0.0, reported_s, now=100.0)
    pool.update_slowness(now=100.0)
    assert workers[1].slowness > 100  # 80× the median: marked
    for w in workers:
        w.learn_load(0, 0.0, 0.0, now=112.0)  # both idle past LATENCY_STALE_S
    pool.update_slowness(now=112.0)
    assert [w.slowness for w in workers] == [1.0, 1.0]


def test_a_report_that_says_nothing_of_the_load_is_not_news() -> None:
    """vLLM's own header carries its queue only: it must not keep the worker's load fresh (the router then reads
    the worker's gauges instead) nor mark it shared."""
    worker = Worker("http://worker-0:8000")
    worker.learn_load(None, None, None, now=100.0)
    assert worker.load_at == 0.0 and worker.shared is False


def test_a_worker_that_stops_reporting_is_no_longer_taken_as_shared() -> None:
    worker = Worker("http://worker-0:8000")
    worker.learn_load(12.0, 12.0, 0.05, now=100.0)
    assert worker.shared is True
    worker.forget_load()
    assert worker.shared is False and worker.load == 0.0  # a replica alone: its own exact bound again


def test_a_placed_key_follows_its_worker_while_it_keeps_new_keys() -> None:
    workers = replica_view([100.0] * 4)
    policy = Affinity(AffinityConfig(group_cap=2))
    home = policy.select(workers, keyed("g"))
    home.in_flight = 40  # far over this replica's own bound: a replica alone would spill the key now
    assert policy.select(workers, keyed("g")) is home  # but every replica's view says the worker is fine
    home.load = 400.0  # and now it is over the mean (175) by more than the band (spill_width × 175): it moves
    assert policy.select(workers, keyed("g")) is not home


def test_spill_width_zero_is_the_hard_bound_even_when_shared() -> None:
    workers = replica_view([500.0, 100.0, 100.0, 100.0])
    assert workers[0].url not in places(workers).values()
    hard = places(workers, Affinity(AffinityConfig(spill_width=0)))
    assert workers[0].url in hard.values()  # its own counts are all 0: the report is not read


@pytest.mark.parametrize("others", [0.0, 2.0])
def test_a_worker_is_shared_until_its_reports_show_this_replica_alone(others: float) -> None:
    w = Worker("http://worker:8000")
    assert not w.shared  # no report yet: the hard bound, as a lone router
    w.learn_load(0.0, 0.0, None, now=1.0)
    assert w.shared  # reporting, nothing known yet: place as other replicas would
    w.in_flight = 40
    for t in range(2, 40):  # under load, the reports hold only this replica's requests (and a stray few)
        w.learn_load(40 + others, 40.0, None, now=float(t))
    assert not w.shared and w.load >= MIN_LOAD
    w.learn_load(0.0, 0.0, None, now=41.0)  # idle between bursts says nothing
    assert not w.shared
    w.learn_load(43.0, 2.0, None, now=41.5)  # nor a stray few requests at the start of the next one
    assert not w.shared
    for t in range(42, 50):  # another replica's requests show up, under load
        w.learn_load(80.0, 80.0, None, now=float(t))
    assert w.shared and w.others == 40.0
