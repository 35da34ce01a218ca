"""Cache-aware routing: send a prompt to the worker most likely to hold its prefix in its KV cache.

The router keeps, per worker, an approximate prefix tree of what it sent there: the prompt text is
cut into blocks of ``cache_block_chars`` characters and block *i* is named by the chained hash
h_i = hash((h_{i-1}, block_i)), so equal names mean equal prefixes and the tree is just a set of
names (an LRU bounded by ``cache_max_blocks``, like the worker's own eviction). Then:

* load imbalanced (max - min > ``cache_balance_abs`` and max > ``cache_balance_rel`` × min):
  the least loaded worker, whatever the cache says;
* the best match covers at least ``cache_match_threshold`` of the prompt: the best-matching worker;
* otherwise: the least loaded, ties rotated. sglang's cache_aware sends a prompt that matches
  nowhere to the worker with the smallest tree, which at zero load piles every sequential request
  onto one worker; rotating the tie spreads them.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Sequence

from pydantic import Field

from router.policies.base import Policy, PolicyConfig, W
from router.request_info import RequestInfo


class CacheAwareConfig(PolicyConfig):
    block_chars: int = Field(64, ge=1, description="cache_aware: prompt characters per block of the prefix tree.")
    max_blocks: int = Field(65536, ge=1, description="cache_aware: blocks remembered per worker (LRU past it).")
    match_threshold: float = Field(
        0.1, ge=0, le=1, description="cache_aware: below this fraction of the prompt matched, balance load instead."
    )
    balance_abs: int = Field(8, ge=0, description="cache_aware: load is imbalanced when max - min in flight is "
                             "above this ...")
    balance_rel: float = Field(1.5, ge=1, description="cache_aware: ... and max is above this × min.")


class CacheAware(Policy):
    name = "cache_aware"
    Config = CacheAwareConfig
    settings_prefix = "cache_"

    def __init__(self, config: CacheAwareConfig | None = None) -> None:
        super().__init__(config)
        # A worker at its in-flight cap drops out of the eligible set for a moment; forgetting its tree
        # then would lose its cache exactly under load, so a url is forgotten only after this long absent.
        self.forget_after_s = 60.0
        self._trees: dict[str, OrderedDict[int, None]] = {}  # url -> chained block hashes, oldest first
        self._urls: tuple[str, ...] = ()  # the eligible set of the previous call
        self._seen: dict[str, float] = {}  # url -> when it was last seen eligible (updated on set changes only)
        self._turn = itertools.count()

    def tree_size(self, url: str) -> int:
        """How many blocks the router believes ``url`` has cached."""
        tree = self._trees.get(url)
        return len(tree) if tree is not None else 0

    def select(self, workers: Sequence[W], request: RequestInfo) -> W:
        self.decisions += 1
        urls = tuple(w.url for w in workers)
        if urls != self._urls:
            self._membership_changed(urls)
        cfg = self.config
        low = high = workers[0].in_flight
        for w in workers:
            load = w.in_flight
            if load < low:
                low = load
            elif load > high:
                high = load

        text = request.text
        if not text:
            return self._rotate([w for w in workers if w.in_flight == low])
        step = cfg.block_chars
        h = 0
        chain = []
        for i in range(0, len(text), step):
            h = hash((h, text[i:i + step]))
            chain.append(h)

        trees = self._trees
        matches = []
        best = 0
        for w in workers:
            tree = trees.get(w.url)
            k = 0
            if tree:
                for c in chain:
                    if c not in tree:
                        break
                    k += 1
            matches.append(k)
            if k > best:
                best = k
        matched = best > 0 and best >= cfg.match_threshold * len(chain)

        if high - low > cfg.balance_abs and high > cfg.balance_rel * low:
            # Imbalanced: least loaded; among those, the best cache hit still wins.
            top = max(m for w, m in zip(workers, matches, strict=True) if w.in_flight == low)
            chosen = self._rotate([w for w, m in zip(workers, matches, strict=True) if w.in_flight == low and m == top])
            if matched and top < best:
                self.spills += 1
        elif matched:
            hits = [w for w, m in zip(workers, matches, strict=True) if m == best]
            fewest = min(w.in_flight for w in hits)
            chosen = self._rotate([w for w in hits if w.in_flight == fewest])
        else:
            # No useful hit anywhere: balance, and rotate ties rather than take the first.
            chosen = self._rotate([w for w in workers if w.in_flight == low])
        self._insert(chosen.url, chain)
        return chosen

    def _rotate(self, tied: list[W]) -> W:
        return tied[0] if len(tied) == 1 else tied[next(self._turn) % len(tied)]

    def _insert(self, url: str, chain: list[int]) -> None:
        tree = self._trees.get(url)
        if tree is None:
            tree = self._trees[url] = OrderedDict()
        touch = tree.move_to_end
        # Deepest block first, root last: the LRU end then evicts leaves before their prefixes, as a
        # radix tree does, instead of a root whose loss would orphan every block below it.
        for h in reversed(chain):
            if h in tree:
                touch(h)
            else:
                tree[h] = None
        evict = tree.popitem
        for _ in range(len(tree) - self.config.max_blocks):
            evict(last=False)

    def _membership_changed(self, urls: tuple[str, ...]) -> None:
        now = time.monotonic()
        seen = self._seen
        for url in self._urls:  # present until now
            seen[url] = now
        for url in urls:
            seen[url] = now
        self._urls = urls
        current = set(urls)
        for url in [u for u, t in seen.items() if u not in current and now - t >= self.forget_after_s]:
            del seen[url]
            self._trees.pop(url, None)
