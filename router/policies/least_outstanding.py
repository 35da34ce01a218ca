"""Fewest requests in flight wins; ties rotate so idle workers share sequential traffic.

Load is ``(in_flight + 1) × slowness``: a straggler (see :meth:`WorkerPool.update_slowness`) counts as
carrying more than it does, so it only gets work when the others are far busier.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from router.policies.base import Policy, PolicyConfig, W
from router.request_info import RequestInfo


class LeastOutstanding(Policy):
    name = "least_outstanding"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self._turn = itertools.count()

    def select(self, workers: Sequence[W], request: RequestInfo) -> W:
        self.decisions += 1
        low = min((w.in_flight + 1) * w.slowness for w in workers)
        tied = [w for w in workers if (w.in_flight + 1) * w.slowness == low]
        return tied[next(self._turn) % len(tied)]
