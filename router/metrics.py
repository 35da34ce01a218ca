"""Prometheus metrics of the router (``genrm_router_*``), in a registry of its own.

Per-worker gauges come from a collector that reads the pool at scrape time, so workers that DNS or
the admin API add or remove appear and disappear without stale series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from router.breaker import STATE_VALUE
from router.fair_queue import Tenant
from router.policies import Policy
from router.workers import WorkerPool

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class _PoolCollector(Collector):
    def __init__(self, pool: WorkerPool, policies: Callable[[], dict[str, Policy]]):
        self.pool, self.policies = pool, policies

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        workers = self.pool.workers
        gauges = {
            "in_flight": ("Requests in flight per worker.", lambda w: w.in_flight),
            "others_in_flight": ("Requests the worker reports holding besides this replica's.", lambda w: w.others),
            "reported_load": ("Requests the worker reports holding, averaged over seconds.", lambda w: w.load),
            "shared": ("1 while other router replicas send the worker a real share of its requests.",
                       lambda w: float(w.shared)),
            "ready": ("1 when the worker passes its probes.", lambda w: float(w.ready)),
            "available": ("1 when the worker may take a request now.", lambda w: float(w.available)),
            "draining": ("1 while the worker drains.", lambda w: float(w.draining)),
            "breaker_state": ("Circuit breaker: 0 closed, 1 half-open, 2 open.",
                              lambda w: STATE_VALUE[w.breaker.state]),
            "latency_ewma_seconds": ("Moving average of successful request latency.", lambda w: w.latency_ewma_s),
        }
        for name, (doc, get) in gauges.items():
            g = GaugeMetricFamily(f"genrm_router_worker_{name}", doc, labels=["worker"])
            for w in workers:
                g.add_metric([w.url], get(w))
            yield g
        failures = CounterMetricFamily("genrm_router_worker_failures", "Failed attempts per worker.", labels=["worker"])
        for w in workers:
            failures.add_metric([w.url], w.failures)
        yield failures
        decisions = CounterMetricFamily("genrm_router_policy_decisions", "Selections per policy.", labels=["policy"])
        spills = CounterMetricFamily("genrm_router_policy_spills",
                                     "Selections that did not go to the preferred (affinity/cache) worker.",
                                     labels=["policy"])
        ratio = GaugeMetricFamily("genrm_router_affinity_spill_ratio", "Spills / decisions per policy.",
                                  labels=["policy"])
        for name, policy in self.policies().items():
            decisions.add_metric([name], policy.decisions)
            spills.add_metric([name], policy.spills)
            ratio.add_metric([name], policy.spills / policy.decisions if policy.decisions else 0.0)
        yield from (decisions, spills, ratio)


class _TenantCollector(Collector):
    """Per API key (its id, never the key; the set is bounded by the configured keys, plus ``anonymous``)."""

    def __init__(self, tenants: Callable[[], Iterable[Tenant]]):
        self.tenants = tenants

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        tenants = list(self.tenants())
        gauges: dict[str, tuple[str, Callable[[Tenant], float]]] = {
            "in_flight": ("Requests of the key at a worker (the worker slots it holds).", lambda t: t.in_flight),
            "queued": ("Requests of the key waiting for a free worker slot.", lambda t: t.queued),
            "weight": ("The key's fair-share weight (key_weights).", lambda t: t.weight),
            "parked_connections": ("Connections of the key not read for now: its backlog is long, their next "
                                   "requests wait in the socket buffers.", lambda t: len(t.parked)),
        }
        for name, (doc, get) in gauges.items():
            g = GaugeMetricFamily(f"genrm_router_key_{name}", doc, labels=["key"])
            for t in tenants:
                g.add_metric([t.name], get(t))
            yield g
        served = CounterMetricFamily("genrm_router_key_served", "Requests of the key answered by a worker.",
                                     labels=["key"])
        rejected = CounterMetricFamily("genrm_router_key_rejected", "Requests of the key the router answered itself "
                                       "with an error, by reason.", labels=["key", "reason"])
        for t in tenants:
            served.add_metric([t.name], t.served)
            for reason, n in sorted(t.rejected.items()):
                rejected.add_metric([t.name, reason], n)
        yield from (served, rejected)


class RouterMetrics:
    def __init__(self, pool: WorkerPool, policies: Callable[[], dict[str, Policy]], queue_depth: Callable[[], int],
                 tenants: Callable[[], Iterable[Tenant]]):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "genrm_router_requests", "Requests by route, status and (last) worker.", ["route", "status", "worker"],
            registry=r,
        )
        self.latency = Histogram(
            "genrm_router_request_latency_seconds", "Time to the response's end, by route.", ["route"],
            buckets=BUCKETS, registry=r,
        )
        self.retries = Counter("genrm_router_retries", "Attempts repeated, by reason.", ["reason"], registry=r)
        self.rejected = Counter(
            "genrm_router_rejected", "Requests the router answered itself with an error, by reason.", ["reason"],
            registry=r,
        )
        self.ejections = Counter(
            "genrm_router_ejections", "Times a worker was taken out (breaker opened, probe failed), by worker.",
            ["worker", "cause"], registry=r,
        )
        self.fanout_items = Counter("genrm_router_fanout_items", "Reward batch items fanned out.", registry=r)
        depth = Gauge("genrm_router_queue_depth", "Requests waiting for a free worker slot.", registry=r)
        depth.set_function(queue_depth)
        r.register(_PoolCollector(pool, policies))
        r.register(_TenantCollector(tenants))
        self._children: dict[tuple[str, int, str], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, status: int, worker: str, seconds: float) -> None:
        key = (route, status, worker)
        children = self._children.get(key)
        if children is None:  # labels() costs a few µs; the hot path reuses the children
            children = (self.requests.labels(route=route, status=str(status), worker=worker),
                        self.latency.labels(route=route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
