"""Rotate over the eligible workers in turn: no state about workers, no look at the request.

The baseline every other policy is measured against; fair when requests cost about the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from router.policies.base import Policy, PolicyConfig, W
from router.request_info import RequestInfo


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self._turn = itertools.count()

    def select(self, workers: Sequence[W], request: RequestInfo) -> W:
        self.decisions += 1
        # The eligible list may shrink or grow between calls; modulo keeps the index valid either way.
        return workers[next(self._turn) % len(workers)]
