"""Worker state the router keeps, and the pool that owns it.

A worker gets traffic only when it is *available*: its last readiness probe passed, it is not
draining, its circuit breaker admits a request and it is below its in-flight cap. What it serves
(model ids from ``/v1/models``, recipes from ``/v1/recipes``) is learnt by the health checker and
splits the pool into model-aware sub-pools.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from common.load_report import TimeAverage
from router.breaker import CircuitBreaker
from router.proxy.upstream import ConnectionPool

STATIC, DNS, ADMIN = "static", "dns", "admin"  # where a worker came from
# Other router replicas use a worker when their requests are this share of its averaged load or more, and no
# longer when they fall below the second share; only under real load (idle between bursts says nothing).
SHARED_SHARE, ALONE_SHARE, MIN_LOAD = 0.2, 0.05, 8.0
ANY_MODEL = "\x00any model"  # what a model request that names none asks for: a worker with some model


@dataclass(eq=False)
class Worker:
    url: str
    source: str = STATIC
    max_in_flight: int = 0  # 0 = no cap
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    ready: bool = False  # last readiness probe (and liveness) passed
    draining: bool = False  # no new requests; removed once idle
    in_flight: int = 0  # this replica's requests on the worker
    load: float = 0.0  # requests the worker reports holding in all, averaged over seconds (common.load_report)
    load_at: float = 0.0  # monotonic time of its last report
    others: float = 0.0  # what its last report holds besides this replica's requests (other replicas')
    shared: bool = False  # other replicas' requests are a real share of its load (SHARED_SHARE)
    load_gauges: bool = False  # a vLLM server: its load is read from its /metrics gauges when it reports none
    models: frozenset[str] | None = None  # None: the worker did not say (it takes anything)
    recipes: frozenset[str] | None = None
    recipe_infos: tuple[dict, ...] = ()  # its /v1/recipes entries, for the router's merged list
    recipe_default: str | None = None
    latency_ewma_s: float = 0.0
    latency_reported: float = 0.0  # seconds a request takes as the worker itself reports it (0: it does not)
    latency_at: float = 0.0  # monotonic time of the last latency observation
    slowness: float = 1.0  # > 1 only for a straggler; policies weigh its load by it
    penalty: float = 1.0  # a straggler's full (unfaded) slowness
    requests: int = 0
    failures: int = 0  # total failed attempts (the breaker keeps the consecutive count)
    probe_failures: int = 0  # consecutive failed probes
    probe_successes: int = 0  # consecutive passed probes
    drained_by: str = ""  # who set ``draining``: a source's sync undoes only its own drain
    host: str = ""
    port: int = 0
    tls: bool = False
    host_header: bytes = b""  # ends the request head of every attempt
    active: set = field(default_factory=set)  # exchanges with an attempt on this worker
    _load_avg: TimeAverage = field(default_factory=TimeAverage)  # of reports that carry no average of their own
    _others_avg: TimeAverage = field(default_factory=TimeAverage)
    conns: ConnectionPool = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = f"host: {parts.netloc}\r\n\r\n".encode("latin-1")
        self.conns = ConnectionPool(self, ssl_context=ssl.create_default_context() if self.tls else None)

    @property
    def available(self) -> bool:
        return (self.ready and not self.draining and self.breaker.allows()
                and (not self.max_in_flight or self.in_flight < self.max_in_flight))

    def learn_load(self, now_load: float | None, average: float | None, latency: float | None, now: float) -> None:
        """A load report: ``now_load`` requests held now, the worker's own ``average`` of them and of the seconds a
        request takes (``latency``); None for what it does not say.

        Until the reports show whether other replicas use the worker, assume they do: placing as they would costs
        a replica alone a little balance, while placing alone among others splits groups."""
        if now_load is None and average is None and latency is None:  # e.g. vLLM's own header: its queue only
            return
        # News: every replica marks a straggler alike from it. 0 is the worker saying it has no current figure
        # (idle a while): this replica's own view of it counts again.
        if latency is not None and latency != self.latency_reported:
            self.latency_reported, self.latency_at = latency, now
        if not self.load_at:
            self.shared = True
        if now_load is not None:
            self.others = max(0.0, now_load - self.in_flight)
            others = self._others_avg.add(self.others, now)
            # Averaged over time, not over reports: replicas hear a worker at different moments and rates and
            # must come to the same figure (best when the worker averages itself: then they read the same one).
            self.load = average if average is not None else self._load_avg.add(now_load, now)
            # A report is a snapshot older than this replica's count (answers it counted may be in already), so
            # ``others`` is a few requests even with no other replica: only a real share of the load says shared.
            if self.load >= MIN_LOAD:  # idle or nearly: a stray request or two says nothing either way
                if others >= SHARED_SHARE * self.load:
                    self.shared = True
                elif others < ALONE_SHARE * self.load:
                    self.shared = False
        elif average is not None:
            self.load = average
        self.load_at = now

    def forget_load(self) -> None:
        """The worker stopped reporting: nothing is known of its load any more."""
        self.load = self.others = self.load_at = self.latency_reported = 0.0
        self.shared = False  # until a report says otherwise: a replica alone keeps its exact bound
        self._load_avg, self._others_avg = TimeAverage(), TimeAverage()

    def observe_latency(self, seconds: float, now: float, alpha: float = 0.2) -> None:
        self.latency_at = now
        old = self.latency_ewma_s
        self.latency_ewma_s = seconds if not old else (1 - alpha) * old + alpha * seconds

    def serves(self, model: str | None, recipe: str | None) -> bool:
        """``model``: a model id, ``ANY_MODEL`` (some model: a request that names none) or None (no matter).
        A worker that did not say (no /v1/models or /v1/recipes) takes anything; one that lists no model (a
        sandbox server) takes no model request."""
        if model is not None and self.models is not None and not (
                self.models if model is ANY_MODEL else model in self.models):
            return False
        return recipe is None or self.recipes is None or recipe in self.recipes

    def describe(self) -> dict[str, object]:
        return {
            "url": self.url, "source": self.source, "ready": self.ready, "draining": self.draining,
            "available": self.available, "in_flight": self.in_flight, "others_in_flight": round(self.others, 1),
            "reported_load": round(self.load, 2), "shared": self.shared, "max_in_flight": self.max_in_flight,
            "breaker": self.breaker.state, "consecutive_failures": self.breaker.failures,
            "failures": self.failures, "requests": self.requests,
            "latency_ewma_ms": round(self.latency_ewma_s * 1000, 3), "slowness": round(self.slowness, 2),
            "models": sorted(self.models or ()), "recipes": sorted(self.recipes or ()),
        }


class WorkerPool:
    """All workers by URL; ``version`` changes whenever membership, readiness, draining or what a worker
    serves changes (cached views such as "all workers serve the same models" key on it)."""

    def __init__(self, urls: Iterable[str] = (), *, max_in_flight: int = 0, breaker_threshold: int = 3,
                 breaker_base_s: float = 1.0, breaker_max_s: float = 60.0):
        self.max_in_flight = max_in_flight
        self._breaker = (breaker_threshold, breaker_base_s, breaker_max_s)
        self.by_url: dict[str, Worker] = {}
        self.version = 0
        for url in urls:
            self.add(url, STATIC)

    @property
    def workers(self) -> list[Worker]:
        return list(self.by_url.values())

    def add(self, url: str, source: str = ADMIN) -> Worker:
        url = url.rstrip("/")
        worker = self.by_url.get(url)
        if worker is None:
            worker = Worker(url, source, self.max_in_flight, CircuitBreaker(*self._breaker))
            self.by_url[url] = worker
            self.version += 1
        if worker.draining:  # re-adding a draining worker takes it back
            worker.draining = False
            worker.drained_by = ""
            self.version += 1
        return worker

    def drain(self, url: str, by: str = ADMIN) -> Worker | None:
        worker = self.by_url.get(url.rstrip("/"))
        if worker is not None:
            worker.draining = True
            worker.drained_by = by
            self.version += 1
        return worker

    def remove(self, url: str) -> Worker | None:
        worker = self.by_url.pop(url.rstrip("/"), None)
        if worker is not None:
            self.version += 1
            worker.conns.close_all()
        return worker

    def reap(self) -> list[Worker]:
        """Remove workers a discovery source drained once nothing is in flight (an admin drain waits for DELETE)."""
        done = [w for w in self.by_url.values() if w.draining and not w.in_flight and w.drained_by != ADMIN]
        for w in done:
            self.remove(w.url)
        return done

    def sync(self, source: str, urls: Iterable[str]) -> tuple[list[str], list[str]]:
        """Make ``source``'s workers exactly ``urls``: add new ones, drain vanished ones. Return (added, drained)."""
        wanted = {u.rstrip("/") for u in urls}
        back = [w for w in self.by_url.values() if w.url in wanted and w.draining and w.drained_by == source]
        added = [self.add(u, source).url for u in sorted(wanted - self.by_url.keys())] + [
            self.add(w.url, source).url for w in back]  # an address that came back before it was reaped
        drained = [w.url for w in self.by_url.values() if w.source == source and w.url not in wanted and not w.draining]
        for url in drained:
            self.drain(url, by=source)
        return added, drained

    def eligible(self, exclude: frozenset[Worker] | set[Worker] = frozenset(), model: str | None = None,
                 recipe: str | None = None) -> list[Worker]:
        return [w for w in self.by_url.values()
                if w.available and w not in exclude and (w.serves(model, recipe) if model or recipe else True)]

    def update_slowness(self, now: float, threshold: float = 2.0, decay_s: float = 10.0,
                        min_gap_s: float = 0.025) -> None:
        """Mark stragglers: a worker whose latency (its own report, else this replica's EWMA of its answers) is
        over ``threshold`` × the median of its peers' weighs ``ratio²`` in the load-aware policies, so it gets a
        request only when the others carry that many times more. The mark fades over ``decay_s`` without new
        observations, so a worker that recovered is tried again rather than shunned for good (Finagle's peak-EWMA
        idea). Gaps under ``min_gap_s`` never count: 0.5 ms against 0.2 ms is noise, not a straggler.
        """
        latency = {w: w.latency_reported or w.latency_ewma_s for w in self.by_url.values()}
        observed = sorted(x for w, x in latency.items() if x and w.ready)
        if len(observed) < 2:
            for w in self.by_url.values():
                w.slowness = 1.0
            return
        median = observed[(len(observed) - 1) // 2]  # the lower median: one straggler of two is still found
        for w in self.by_url.values():
            ratio = latency[w] / median if median > 0 else 1.0
            if ratio <= threshold or latency[w] - median < min_gap_s:
                w.slowness = w.penalty = 1.0
                continue
            w.penalty = ratio * ratio
            w.slowness = 1.0 + (w.penalty - 1.0) * math.exp(-(now - w.latency_at) / decay_s)

    @staticmethod
    def on_trial(worker: Worker, now: float) -> None:
        """A faded straggler was just given a request: full weight again until its answer tells more
        (else a fast router sends it a burst in the time one slow answer takes)."""
        worker.slowness = worker.penalty
        worker.latency_at = now

    def served(self) -> tuple[list[str], list[str]]:
        """Models and recipes the workers serve (for a 404 that says what exists)."""
        live = [w for w in self.by_url.values() if not w.draining]
        return (sorted({m for w in live for m in w.models or ()}),
                sorted({r for w in live for r in w.recipes or ()}))
