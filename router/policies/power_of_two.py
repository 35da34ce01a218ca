"""Power of two choices: sample two distinct workers at random, send to the one with fewer in flight.

Nearly as well balanced as least-outstanding, but with no global minimum to agree on, so several
router replicas do not all pile onto the same momentarily idle worker.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from router.policies.base import Policy, PolicyConfig, W
from router.request_info import RequestInfo


class PowerOfTwo(Policy):
    name = "power_of_two"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self._randrange = random.Random().randrange  # own stream: seeding the global one elsewhere cannot skew us

    def select(self, workers: Sequence[W], request: RequestInfo) -> W:
        self.decisions += 1
        n = len(workers)
        if n == 1:
            return workers[0]
        # Two distinct uniform indices, as random.sample(workers, 2) would give, without building a list.
        i = self._randrange(n)
        j = self._randrange(n - 1)
        if j >= i:
            j += 1
        a, b = workers[i], workers[j]
        # Two samples are a fair contest between peers only: a marked straggler loses to a peer whatever the
        # loads (random sampling lets one fast worker's queue grow past the penalty now and then).
        sa, sb = a.slowness > 2.0, b.slowness > 2.0
        if sa != sb:
            return b if sa else a
        # a is already random, so ties need no coin
        return a if (a.in_flight + 1) * a.slowness <= (b.in_flight + 1) * b.slowness else b
