"""Prometheus metrics of one GenRM server, in a registry of its own (several apps can share a process).

Load gauges use vLLM's names (``vllm:num_requests_running`` / ``vllm:num_requests_waiting``) so that
routers built for vLLM (sglang-router, vllm-router, ours) read this server's load unchanged.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.genrm_server.engines import Engine

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    def __init__(self, engine: Engine):
        self.registry = CollectorRegistry()
        model = engine.model_name
        r = self.registry
        self.requests = Counter(
            "genrm_server_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "genrm_server_request_latency_seconds", "End-to-end request latency by route.", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter(
            "genrm_server_prompt_tokens", "Prompt tokens processed.", ["model_name"], registry=r
        ).labels(model_name=model)
        self.generation_tokens = Counter(
            "genrm_server_generation_tokens", "Tokens generated.", ["model_name"], registry=r
        ).labels(model_name=model)
        self.batch_size = Histogram(
            "genrm_server_batch_size", "Sequences in each engine forward step (dynamic batching).", ["model_name"],
            buckets=BATCH_BUCKETS, registry=r,
        ).labels(model_name=model)
        running = Gauge("vllm:num_requests_running", "Sequences being generated.", ["model_name"], registry=r)
        running.labels(model_name=model).set_function(lambda: engine.num_running)
        waiting = Gauge("vllm:num_requests_waiting", "Sequences waiting for a batch.", ["model_name"], registry=r)
        waiting.labels(model_name=model).set_function(lambda: engine.num_waiting)
        ready = Gauge("genrm_server_ready", "1 when the engine is loaded and serving.", registry=r)
        ready.set_function(lambda: 1.0 if engine.ready else 0.0)
        engine.on_batch = self.batch_size.observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
