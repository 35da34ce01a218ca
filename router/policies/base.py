"""The policy interface: given the eligible workers and the request, pick one. Nothing else.

Policies see only :class:`~router.workers.Worker` state (``in_flight``, ``url``) and the lazily
parsed :class:`~router.request_info.RequestInfo`. The router passes only available workers, never
an empty list, and owns all in-flight accounting.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from router.request_info import RequestInfo
from router.workers import Worker


@dataclass(frozen=True)
class PolicyConfig:
    """Tuning knobs of the policies that have any (from the router settings)."""

    # Bounded load for placing a new key: a worker above this × mean spills to the next. 1.0 (the mean) since
    # a placed key's later requests have their own slack (affinity_group_cap): groups stay whole and balanced.
    affinity_load_factor: float = 1.0
    affinity_vnodes: int = 160  # virtual nodes per worker on the hash ring
    affinity_group_cap: int = 16  # a placed key's later requests follow it up to bound + this in flight
    cache_block_chars: int = 64  # prefix-tree granularity
    cache_max_blocks: int = 65536  # per worker, LRU-evicted past this
    cache_match_threshold: float = 0.1  # below this fraction of the prompt matched, balance load instead
    cache_balance_abs: int = 8  # imbalance = max - min load above this ...
    cache_balance_rel: float = 1.5  # ... and max load above this × min load


class Policy(abc.ABC):
    name: str

    def __init__(self, config: PolicyConfig | None = None):
        self.config = config or PolicyConfig()
        self.spills = 0  # requests not sent to the preferred worker (affinity/cache_aware)
        self.decisions = 0

    @abc.abstractmethod
    def select(self, workers: Sequence[Worker], request: RequestInfo) -> Worker:
        """Return one of ``workers`` (never empty)."""
