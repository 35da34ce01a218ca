"""The router's wait queue, shared fairly between API keys (tenants) when the workers' slots are all taken.

Each key is a *tenant* with a weight (``key_weights``; 1 when not set); requests without a key share the tenant
``anonymous``. A tenant's waiting requests form a FIFO *lane*. When a slot frees, the lane served next is the
backlogged one whose tenant holds the fewest slots per unit of weight (``in_flight / weight``): a light client
that uses less than its share is served at the next free slot however long a heavy client's backlog is, and
the heavy client gets every slot the others leave. Ties (e.g. one slot, freed and empty for all) go to the lane
with the lowest *pass* (stride scheduling: a lane's pass grows by ``1 / weight`` per request served from it), so
with few slots the served counts follow the weights too. A slot freed by a tenant below the others' share, with
nothing of its own waiting, is kept for its next request for ``fair_share_hold_s`` (``should_hold``). A key
whose backlog is long has its client connections read no further (the core *parks* them) until it shrinks: a
4,096-request burst then waits in the kernel's socket buffers and is read as it is served, instead of stalling
the router for the time it takes to read it all at once. With fair share off every request waits in one lane
(FIFO), as before.

The queue bound keeps its meaning (``queue_size`` waiting in all); when it is full, a newcomer whose lane holds
less than the longest lane (per unit of weight) pushes out that lane's newest request (longest queue drop), so
one tenant's burst cannot fill the queue and turn everyone else away with 503s. Costs: O(1) to queue or leave,
O(lanes waiting) per freed slot (lanes are bounded by the configured keys).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from router.parking import Parking

if TYPE_CHECKING:
    from router.proxy.exchange import Exchange

ANONYMOUS = "anonymous"  # the tenant of requests without an API key


class Tenant:
    """One API key's (or the anonymous requests') share and counts; ``name`` is a key id, never a key."""

    __slots__ = ("held", "in_flight", "lane", "name", "parked", "queued", "rejected", "served", "weight")

    def __init__(self, name: str, weight: float, lane: Lane):
        self.name, self.weight, self.lane = name, weight, lane
        self.in_flight = 0  # worker slots its requests hold (the exchanges count them)
        self.held = 0  # freed slots kept for its next request a moment (see FairQueue.should_hold)
        self.parked = Parking()  # its client connections not read while its backlog is long (core.py)
        self.queued = 0
        self.served = 0  # answered by a worker
        self.rejected: Counter[str] = Counter()  # answered by the router with an error, by reason


class Lane:
    """A FIFO of waiting requests (one per tenant, or one for all with fair share off)."""

    __slots__ = ("pass_", "tenant", "waiting")

    def __init__(self, tenant: Tenant | None = None):
        self.tenant = tenant  # None: the shared FIFO lane
        self.waiting: OrderedDict[Exchange, None] = OrderedDict()  # O(1) append, removal, pop at either end
        self.pass_ = 0.0

    @property
    def weight(self) -> float:
        return self.tenant.weight if self.tenant is not None else 1.0

    def rank(self) -> tuple[float, float]:
        tenant = self.tenant
        return (share(tenant) if tenant is not None else 0.0), self.pass_


def share(tenant: Tenant) -> float:
    """Worker slots a tenant holds (or has kept) per unit of weight: the fewer, the sooner it is served."""
    return (tenant.in_flight + tenant.held) / tenant.weight


class FairQueue:
    """Waiting requests by tenant; ``pop`` picks the next one to get a freed slot (see the module doc)."""

    def __init__(self, names: Iterable[str], weights: dict[str, float], limit: int, fair: bool = True,
                 on_left: Callable[[Tenant], None] | None = None):
        self.limit, self.fair, self.on_left = limit, fair, on_left  # on_left: one of a tenant's waiters left
        shared = None if fair else Lane()
        self.tenants: dict[str, Tenant] = {}
        for name in dict.fromkeys([ANONYMOUS, *names]):
            lane = shared or Lane()
            tenant = Tenant(name, float(weights.get(name, 1.0)), lane)
            if fair:
                lane.tenant = tenant
            self.tenants[name] = tenant
        self.anonymous = self.tenants[ANONYMOUS]
        self._backlogged: list[Lane] = []  # lanes with someone waiting, in the order they became so
        self._size = 0
        self.held = 0  # freed slots kept for tenants' next requests, all tenants
        self._vtime = 0.0  # the pass of the lane served last: a lane that starts waiting starts there

    def __len__(self) -> int:
        return self._size

    def tenant(self, name: str | None) -> Tenant:
        """The tenant of a key id (``anonymous`` for no key)."""
        return self.tenants.get(name, self.anonymous) if name else self.anonymous

    # -- joining and leaving --------------------------------------------------------------------

    def push(self, exchange: Exchange, front: bool = False) -> tuple[bool, Exchange | None]:
        """Queue ``exchange`` (``front``: back at the head of its lane, where it waited before).

        Returns (admitted, pushed out): with the queue full, either the newcomer is refused, or the newest
        request of a lane over its share leaves to make room (the caller answers it).
        """
        lane = exchange.tenant.lane
        victim = None
        if self._size >= self.limit:
            victim = self._over_share(lane)
            if victim is None:
                return False, None
            self.remove(victim)
        if not lane.waiting:
            lane.pass_ = max(lane.pass_, self._vtime)
            self._backlogged.append(lane)
        lane.waiting[exchange] = None
        if front:
            lane.waiting.move_to_end(exchange, last=False)
            lane.pass_ -= 1.0 / lane.weight  # it was charged when popped, and not served
        exchange.tenant.queued += 1
        self._size += 1
        return True, victim

    def _over_share(self, lane: Lane) -> Exchange | None:
        """With the queue full: the newest request of the lane longest per unit of weight, if that lane holds
        more than ``lane`` would with the newcomer (fair share only; FIFO refuses the newcomer)."""
        if not self.fair or not self._backlogged:
            return None
        longest = max(self._backlogged, key=lambda w: len(w.waiting) / w.weight)
        if longest is lane or len(longest.waiting) / longest.weight <= (len(lane.waiting) + 1) / lane.weight:
            return None
        return next(reversed(longest.waiting))

    def remove(self, exchange: Exchange) -> bool:
        """Take ``exchange`` out (queue timeout, client gone, pushed out); False when it was not queued."""
        lane = exchange.tenant.lane
        if exchange not in lane.waiting:
            return False
        del lane.waiting[exchange]
        self._left(lane, exchange)
        return True

    def _left(self, lane: Lane, exchange: Exchange) -> None:
        exchange.tenant.queued -= 1
        self._size -= 1
        if not lane.waiting:
            self._backlogged.remove(lane)
        if self.on_left is not None:
            self.on_left(exchange.tenant)

    # -- serving --------------------------------------------------------------------------------

    def should_hold(self, tenant: Tenant, capacity: int) -> bool:
        """Keep the slot ``tenant``'s request just freed for its next request, rather than let another key have it?

        Yes when it has nothing waiting and holds fewer slots (per unit of weight) than every key waiting, or,
        with nobody waiting, fewer than its weighted share of the ``capacity`` (slots in all) among the keys at
        work: a closed-loop client (a trainer with N calls out) sends its next call a moment after an answer, and
        without the hold that moment hands its slot to a heavy backlog, or to the next heavy burst; the next free
        slot may then be a whole service time away (slots that started together free together). The caller gives
        the slot back when the hold runs out.
        """
        if not self.fair or tenant.queued or len(self.tenants) == 1:
            return False
        if self._backlogged:
            mine = share(tenant)
            return all(mine < share(lane.tenant) for lane in self._backlogged)  # type: ignore[arg-type]
        weights = sum(o.weight for o in self.tenants.values() if o is not tenant and (o.in_flight or o.held))
        return bool(weights) and tenant.in_flight + tenant.held < capacity * tenant.weight / (tenant.weight + weights)

    def hold(self, tenant: Tenant) -> None:
        tenant.held += 1
        self.held += 1

    def release_hold(self, tenant: Tenant) -> bool:
        """One of ``tenant``'s kept slots is used or given up; False when it had none (already given up)."""
        if not tenant.held:
            return False
        tenant.held -= 1
        self.held -= 1
        return True

    def pop(self, can_go: Callable[[Exchange], bool], scan: int = 64) -> Exchange | None:
        """The next request to give a freed slot to: from the best-ranked lane, its oldest that ``can_go``
        (up to ``scan`` deep: a request waiting for a busy model pool must not block one behind it)."""
        if not self._size:
            return None
        lanes = self._backlogged
        if len(lanes) > 1:
            lanes = sorted(lanes, key=Lane.rank)  # stable: equal ranks keep the order they started waiting in
        for lane in lanes:
            for i, exchange in enumerate(lane.waiting):
                if i >= scan:
                    break
                if can_go(exchange):
                    del lane.waiting[exchange]
                    self._vtime = lane.pass_
                    lane.pass_ += 1.0 / lane.weight
                    self._left(lane, exchange)
                    return exchange
        return None
