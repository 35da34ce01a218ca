"""Consistent hashing with bounded load (Mirrokni, Thorup & Zadimoghaddam, 2018).

Requests with the same affinity key (``X-Affinity-Key``, a reward sample's ``group_id``, else the
prompt's first characters) go to the same worker, so its prefix cache is reused; adding or removing
a worker moves only that worker's share of keys. A worker already above
``ceil(load_factor × (total in flight + 1) / n)`` is skipped for the next one clockwise on the ring,
so a hot key cannot pile up on one worker while the others idle.

The bound alone would split GRPO groups: at the start of a burst the total in flight is small, so a group's
second member already spills. So the bound places *keys*, not requests: the first request of a key picks its
worker as above and the choice is remembered (an LRU of ``_PLACED_KEPT`` keys); later requests of the key
follow it while that worker stays at or below ``bound + group_cap``, and only past that spill (a hot key
still cannot pile up). A reward batch holds whole groups, so it is placed by the bound alone and not
remembered: nothing of its key comes later to keep together. (Measurements: docs/benchmarks.md.)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence

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
        for w in workers:
            total += w.in_flight
        # Taking this request must leave the worker at or below the bound: in_flight + 1 <= bound.
        bound = math.ceil(self.config.load_factor * (total + 1) / n)
        key = request.affinity_hash
        if request.whole_groups:
            return self._place(workers, key, bound)
        url = self._placed.get(key)
        if url is not None:
            cap = bound + self.config.group_cap  # room for the rest of a group placed near the bound
            for w in workers:  # the key's worker, if still eligible (ejected/draining ones are not passed)
                if w.url == url:
                    if (w.in_flight + 1) * w.slowness <= cap:
                        self._placed.move_to_end(key)
                        return w
                    break
        chosen = self._place(workers, key, bound)
        self._placed[key] = chosen.url
        self._placed.move_to_end(key)
        if len(self._placed) > _PLACED_KEPT:
            self._placed.popitem(last=False)
        return chosen

    def _place(self, workers: Sequence[W], key: int, bound: int) -> W:
        """Consistent hashing with bounded load: the key's worker on the ring, else the next that fits."""
        ring = self._ring(tuple(w.url for w in workers))
        m = len(ring)
        start = bisect_right(ring, (key << _SHIFT) | _MASK)  # first position > key
        if start == m:
            start = 0
        first = workers[ring[start] & _MASK]
        if (first.in_flight + 1) * first.slowness <= bound:  # a straggler weighs its slowness (workers.py)
            return first
        self.spills += 1
        # Clockwise from the key. A worker met again on a later vnode is simply re-checked: cheaper than
        # tracking which were seen, and with a load factor >= 1 the least loaded always fits, so this ends early.
        for k in range(start + 1, start + m):
            w = workers[ring[k % m] & _MASK]
            if (w.in_flight + 1) * w.slowness <= bound:
                return w
        # Only reachable with a load factor below 1: nobody fits, so take the least loaded.
        return min(workers, key=_load)


def _load(w: WorkerView) -> float:
    return (w.in_flight + 1) * w.slowness
