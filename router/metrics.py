"""Prometheus metrics of the router (``genrm_router_*``), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from router.workers import WorkerPool

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class RouterMetrics:
    def __init__(self, pool: WorkerPool):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "genrm_router_requests", "Proxied requests by status and worker.", ["status", "worker"], registry=r
        )
        self.latency = Histogram(
            "genrm_router_request_latency_seconds", "Time to the upstream response's end.", buckets=BUCKETS,
            registry=r,
        )
        self.retries = Counter("genrm_router_retries", "Attempts repeated on another worker.", registry=r)
        self.no_worker = Counter("genrm_router_no_worker", "Requests refused: no ready worker.", registry=r)
        in_flight = Gauge("genrm_router_worker_in_flight", "Requests in flight per worker.", ["worker"], registry=r)
        ready = Gauge("genrm_router_worker_ready", "1 when the worker passes its readiness probe.", ["worker"],
                      registry=r)
        for w in pool.workers:
            in_flight.labels(worker=w.url).set_function(lambda w=w: w.in_flight)
            ready.labels(worker=w.url).set_function(lambda w=w: 1.0 if w.ready else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
