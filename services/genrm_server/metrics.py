"""Prometheus metrics of one GenRM server, in a registry of its own (several apps can share a process).

Load gauges use vLLM's names (``vllm:num_requests_running`` / ``vllm:num_requests_waiting``) so that
routers built for vLLM (sglang-router, vllm-router, ours) read this server's load unchanged.
"""

from __future__ import annotations

from typing import Any

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
        aborted = Counter("genrm_server_aborted_sequences", "Sequences dropped mid-generation: the client left.",
                          ["model_name"], registry=r).labels(model_name=model)
        engine.on_abort = aborted.inc
        self.rewards = RewardMetrics(r, tokens=(self.prompt_tokens, self.generation_tokens))

    def render(self) -> bytes:
        return generate_latest(self.registry)


SCORE_BUCKETS = (-1.0, -0.5, 0.0, 0.5, 1.0)


class RewardMetrics:
    """Per-recipe reward metrics, registered in the server's registry."""

    def __init__(self, registry: CollectorRegistry, tokens: tuple[Any, Any] | None = None):
        r = registry
        self._tokens = tokens  # the server's prompt / generation token counters: judge calls count there too
        self.samples = Counter("genrm_reward_samples", "Samples scored, by recipe and outcome (ok / error).",
                               ["recipe", "outcome"], registry=r)
        self.score = Histogram("genrm_reward_score", "Scores returned, by recipe.", ["recipe"],
                               buckets=SCORE_BUCKETS, registry=r)
        self.flawed_positives = Counter("genrm_reward_flawed_positives", "Correct answers the judge found flawed.",
                                        ["recipe"], registry=r)
        self.judge_failures = Counter(
            "genrm_reward_judge_failures", "Judge calls that failed or gave no parsable verdict (judge_ok=false).",
            ["recipe"], registry=r,
        )
        self.judge_latency = Histogram("genrm_reward_judge_latency_seconds", "Judge call latency, by recipe.",
                                       ["recipe"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter(
            "genrm_reward_cache_hits", "Judge results served without a new call: kind=hit (LRU) or coalesced.",
            ["recipe", "kind"], registry=r,
        )
        self.judge_errors = Counter("genrm_reward_judge_call_errors", "Judge calls the engine could not serve.",
                                    ["recipe"], registry=r)
        self._ok: dict[str, tuple[Counter, Histogram]] = {}

    def on_judge_reply(self, recipe: str, reply: object) -> None:
        self.judge_latency.labels(recipe=recipe).observe(reply.latency_s)  # type: ignore[attr-defined]
        if not reply.ok:  # type: ignore[attr-defined]
            self.judge_errors.labels(recipe=recipe).inc()
        if self._tokens is not None:
            self._tokens[0].inc(reply.prompt_tokens)  # type: ignore[attr-defined]
            self._tokens[1].inc(reply.completion_tokens)  # type: ignore[attr-defined]

    def on_result(self, recipe: str, result: dict) -> None:
        children = self._ok.get(recipe)
        if children is None:  # labels() costs more than the math rule: resolve once per recipe
            children = self._ok[recipe] = (self.samples.labels(recipe=recipe, outcome="ok"),
                                           self.score.labels(recipe=recipe))
        children[0].inc()
        children[1].observe(result["score"])
        if result.get("flawed_positive"):
            self.flawed_positives.labels(recipe=recipe).inc()
        if result.get("judge_ok") is False:
            self.judge_failures.labels(recipe=recipe).inc()
