"""Consistent hashing with bounded load (Mirrokni, Thorup & Zadimoghaddam, 2018), agreed on by every router replica.

Requests with the same affinity key (``X-Affinity-Key``, a reward sample's ``group_id``, else the
prompt's first characters) go to the same worker, so its prefix cache is reused; adding or removing
a worker moves only that worker's share of keys. A worker already above
``ceil(load_factor × (total in flight + 1) / capacity)`` is skipped for the next one clockwise on the ring,
so a hot key cannot pile up on one worker while the others idle. Capacity is Σ 1/slowness: a straggler's
load weighs its slowness, and its share goes to the others without pushing them over the bound.

The bound alone would split GRPO groups: at the start of a burst the total in flight is small, so a group's
second member already spills. So the bound places *keys*, not requests: the first request of a key picks its
worker as above and the choice is remembered (an LRU of ``_PLACED_KEPT`` keys); later requests of the key
follow it while that worker stays at or below ``bound + group_cap`` requests, and only past that spill (a hot key
still cannot pile up). A reward batch holds whole groups, so it is placed by the bound alone and not
remembered: nothing of its key comes later to keep together.

Several replicas (a Deployment behind one Service) each place a key the first time *they* see it, and share
nothing. Bounded by their own counts they disagree: each sees its own third of the load, so near the bound one
finds a worker just over it and another just under, and a group's members land on two or three workers
(3 replicas: 73 % of a group together). So while the workers' load reports (``common.load_report``) show other
replicas' requests, new keys are placed on what every replica reads alike: each worker's load as the worker
itself averages it over seconds, weighed by the slowness marked from the seconds a request takes as the worker
reports them. A worker over the mean of those keeps ``1 - (over / (spill_width × mean))²`` of its new keys,
which ones drawn from a hash of key and worker. The curve is flat at the mean, where most workers are, so views
a little apart or a worker a little over move almost no key; only real overload (a straggler, a worker others
load) spills, to the next worker clockwise, the same on every replica. Balance is then the ring's (about
1.05-1.1× the mean with 160 vnodes) instead of the bound's. A replica alone keeps the hard bound on its exact
counts. One that restarts reads every worker's averages from its first probes (a ``/ready`` answer carries a
report) and places as the others do. Measurements and the variants tried: docs/benchmarks.md.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from pydantic import Field

from common.hashing import stable_hash
from router.policies.base import Policy, PolicyConfig, W, WorkerView
from router.request_info import RequestInfo

# Rings kept at once: the eligible set flips between "all" and "all but the ones at their cap",
# so keep a few rather than only the last.
_RINGS_KEPT = 16
# A ring entry packs (position << _SHIFT) | worker index (so up to 65,536 workers) into one int: one list
# to sort and bisect instead of two.
_SHIFT = 16
_MASK = (1 << _SHIFT) - 1
# Keys remembered with their worker: far more than the groups of one training step are ever in flight.
_PLACED_KEPT = 65536
_M64 = (1 << 64) - 1


class AffinityConfig(PolicyConfig):
    load_factor: float = Field(
        1.0, ge=1.0, description="Bounded load: a new affinity key skips a worker above this × the mean load "
        "(1.0: groups stay whole and balanced, since a placed key's later requests have group_cap of slack)."
    )
    vnodes: int = Field(160, ge=1, description="Virtual nodes per worker on the affinity hash ring.")
    group_cap: int = Field(
        16, ge=0, description="A placed key's later requests follow it while its worker is within the bound "
        "plus this many in flight."
    )
    spill_width: float = Field(
        1.0, ge=0, description="With other router replicas placing keys too (the workers' load reports say so), "
        "a worker over the mean of the reported loads keeps a share of new keys that falls to none at this × the "
        "mean over it, the same keys on every replica (0: each replica bounds by its own counts, as one alone)."
    )


class Affinity(Policy):
    name = "affinity"
    Config = AffinityConfig
    settings_prefix = "affinity_"

    def __init__(self, config: AffinityConfig | None = None) -> None:
        super().__init__(config)
        self._rings: dict[tuple[str, ...], list[int]] = {}  # tuple of urls in the order passed -> packed ring
        # url -> its sorted vnode positions: hashing is most of a ring's cost, and a new subset reuses them.
        self._vnodes: dict[str, list[int]] = {}
        self._placed: OrderedDict[int, str] = OrderedDict()  # affinity hash -> url of the key's worker
        self._salts: dict[str, int] = {}  # url -> its hash, which draws the keys it keeps over the bound

    def _ring(self, urls: tuple[str, ...]) -> list[int]:
        ring = self._rings.get(urls)
        if ring is None:
            vnodes = self._vnodes
            if len(vnodes) > 4096:  # workers come and go over days; don't keep every url ever seen
                vnodes.clear()
            count = max(1, self.config.vnodes)
            ring = []
            for idx, url in enumerate(urls):
                points = vnodes.get(url)
                if points is None:
                    # Positions depend on the url only, never on the set: that is what keeps movement minimal.
                    points = vnodes[url] = sorted(stable_hash(f"{url}#{v}") for v in range(count))
                ring.extend((p << _SHIFT) | idx for p in points)
            ring.sort()  # n sorted runs: timsort merges them
            if len(self._rings) >= _RINGS_KEPT:
                del self._rings[next(iter(self._rings))]  # oldest first
            self._rings[urls] = ring
        return ring

    def select(self, workers: Sequence[W], request: RequestInfo) -> W:
        self.decisions += 1
        n = len(workers)
        if n == 1:
            return workers[0]
        total = 0
        reported = capacity = 0.0
        shared = False
        for w in workers:
            total += w.in_flight
            reported += w.load
            capacity += 1.0 / w.slowness
            shared = shared or w.shared
        # Taking this request must leave the worker at or below the bound: (load + 1) × slowness <= bound.
        bound = math.ceil(self.config.load_factor * (total + 1) / capacity)
        key = request.affinity_hash
        if request.whole_groups:
            return self._place(workers, key, bound)
        agreed = shared and self.config.spill_width > 0  # other replicas place keys on these workers too
        mean = width = 0.0
        if agreed:
            mean = self.config.load_factor * reported / capacity
            width = max(self.config.spill_width * mean, float(self.config.group_cap), 1.0)
        url = self._placed.get(key)
        if url is not None:
            cap = self.config.group_cap
            for w in workers:  # the key's worker, if still eligible (ejected/draining ones are not passed)
                if w.url == url:
                    # Room for the rest of a group; with other replicas, also while the worker keeps new keys:
                    # they place on loads averaged over seconds, which leave this replica's counts uneven.
                    if (w.in_flight + 1 - cap) * w.slowness <= bound or (
                            agreed and w.load * w.slowness - mean < width):
                        self._placed.move_to_end(key)
                        return w
                    break
        chosen = self._place_agreed(workers, key, mean, width) if agreed else self._place(workers, key, bound)
        self._placed[key] = chosen.url
        self._placed.move_to_end(key)
        if len(self._placed) > _PLACED_KEPT:
            self._placed.popitem(last=False)
        return chosen

    def _walk(self, workers: Sequence[W], key: int) -> Iterator[W]:
        """The workers clockwise from the key; one met again on a later vnode comes again (cheaper than tracking
        which were seen; the walks end at the first that fits, and with a load factor >= 1 the least loaded does)."""
        ring = self._ring(tuple(w.url for w in workers))
        m = len(ring)
        start = bisect_right(ring, (key << _SHIFT) | _MASK)  # first position > key
        for k in range(start, start + m):
            yield workers[ring[k % m] & _MASK]

    def _place(self, workers: Sequence[W], key: int, bound: int) -> W:
        """Consistent hashing with bounded load: the key's worker on the ring, else the next that fits."""
        first = True
        for w in self._walk(workers, key):
            if (w.in_flight + 1) * w.slowness <= bound:  # a straggler weighs its slowness (workers.py)
                return w
            if first:
                self.spills += 1
                first = False
        # Only reachable with a load factor below 1: nobody fits, so take the least loaded.
        return min(workers, key=_load)

    def _place_agreed(self, workers: Sequence[W], key: int, mean: float, width: float) -> W:
        """The same on what every replica knows alike, each worker's averaged load report: a worker ``over`` the
        mean keeps the share ``1 - (over / width)²`` of its new keys, the keys drawn by their hash. Near views give
        near answers, and the curve is flat at the mean, where most workers are: small gaps between replicas'
        views, or a worker a little over, move almost no key; only real overload spills."""
        # (A worker that sends no report counts as idle here: every worker of a shared pool should report.)
        first = True
        for w in self._walk(workers, key):
            over = w.load * w.slowness - mean
            if over <= 0 or (over < width and self._keeps(key, w.url, 1.0 - (over / width) ** 2)):
                return w
            if first:
                self.spills += 1
                first = False
        return min(workers, key=_load)

    def _keeps(self, key: int, url: str, share: float) -> bool:
        """Whether a worker over the bound keeps ``key``: true for ``share`` of all keys, the same on every replica."""
        salt = self._salts.get(url)
        if salt is None:
            if len(self._salts) > 4096:
                self._salts.clear()
            salt = self._salts[url] = stable_hash(url)
        z = key ^ salt  # splitmix64's finalizer: a uniform 64-bit draw per (key, worker)
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return (z ^ (z >> 31)) < share * 2.0**64


def _load(w: WorkerView) -> float:
    return (w.in_flight + 1) * w.slowness
