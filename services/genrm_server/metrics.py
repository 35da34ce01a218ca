"""Prometheus metrics of one GenRM server, in a registry of its own (several apps can share a process).

Load gauges use vLLM's names (``vllm:num_requests_running`` / ``vllm:num_requests_waiting``) so that
routers built for vLLM (sglang-router, vllm-router, ours) read this server's load unchanged.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from services.genrm_server.engines import Engine

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    def __init__(self, engine: Engine):
        self.registry = CollectorRegistry()
        self.engine = engine
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
        return generate_latest(self.registry) + self.engine.extra_metrics()


SCORE_BUCKETS = (-1.0, -0.5, 0.0, 0.5, 1.0)


class RewardMetrics:
    """Per-recipe reward metrics, registered in the server's registry."""

    def __init__(self, registry: CollectorRegistry, tokens: tuple[Any, Any] | None = None):
        r = registry
        self._tokens = tokens  # the server's prompt / generation token counters: judge calls count there too
        self.samples = Counter("genrm_reward_samples", "Samples scored, by recipe and outcome (ok / error).",
                               ["recipe", "outcome"], registry=r)
        self.score = ScoreHistogram(r)
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
        self.sandbox_failures = Counter(
            "genrm_reward_sandbox_failures", "Samples or /run_code calls the sandbox itself failed (an error, never "
            "a score).", registry=r)
        self._ok: dict[str, Any] = {}

    def on_judge_reply(self, recipe: str, reply: object) -> None:
        self.judge_latency.labels(recipe=recipe).observe(reply.latency_s)  # type: ignore[attr-defined]
        if not reply.ok:  # type: ignore[attr-defined]
            self.judge_errors.labels(recipe=recipe).inc()
        if self._tokens is not None:
            self._tokens[0].inc(reply.prompt_tokens)  # type: ignore[attr-defined]
            self._tokens[1].inc(reply.completion_tokens)  # type: ignore[attr-defined]

    def on_result(self, recipe: str, result: dict) -> None:
        self.on_results(recipe, (result,))

    def on_results(self, recipe: str, results: Iterable[dict]) -> None:
        """Count one recipe's results at once (a batch's judge-free samples arrive thousands at a time)."""
        ok = self._ok.get(recipe)
        if ok is None:  # labels() costs more than the math rule: resolve once per recipe
            ok = self._ok[recipe] = self.samples.labels(recipe=recipe, outcome="ok")
        results = results if isinstance(results, (list, tuple)) else list(results)
        ok.inc(len(results))
        self.score.add(recipe, (r["score"] for r in results))
        flawed = sum(1 for r in results if r.get("flawed_positive"))
        if flawed:
            self.flawed_positives.labels(recipe=recipe).inc(flawed)
        failed = sum(1 for r in results if r.get("judge_ok") is False)
        if failed:
            self.judge_failures.labels(recipe=recipe).inc(failed)


class ScoreHistogram:
    """``genrm_reward_score{recipe}``: plain per-bucket counts, rendered as a histogram at scrape time.

    prometheus_client's Histogram takes a lock per observation, a sizeable share of a judge-free sample's
    cost; here a batch adds its scores in a loop of integer increments. Updated and scraped on the event
    loop's thread only. Unlike prometheus_client's (which drops ``_sum`` when a bucket is negative), it
    exports ``_sum``, so dashboards can show the mean score.
    """

    name, documentation = "genrm_reward_score", "Scores returned, by recipe."

    def __init__(self, registry: CollectorRegistry):
        self._counts: dict[str, list[int]] = {}  # per recipe: one count per bucket, the last one +Inf
        self._sums: dict[str, float] = {}
        self._bounds = [*(floatToGoString(b) for b in SCORE_BUCKETS), "+Inf"]
        registry.register(self)

    def add(self, recipe: str, scores: Iterable[float]) -> None:
        counts = self._counts.get(recipe)
        if counts is None:
            counts = self._counts[recipe] = [0] * (len(SCORE_BUCKETS) + 1)
            self._sums[recipe] = 0.0
        total = 0.0
        for score in scores:
            counts[bisect.bisect_left(SCORE_BUCKETS, score)] += 1  # the first bucket whose bound is >= score
            total += score
        self._sums[recipe] += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["recipe"])
        for recipe, counts in self._counts.items():
            cumulative, buckets = 0, []
            for bound, count in zip(self._bounds, counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([recipe], buckets, sum_value=None)
            # add_metric leaves out _count and _sum when a bucket is negative (OpenMetrics' rule); the text
            # format Prometheus scrapes takes both, and the dashboard's rates need _count.
            labels = {"recipe": recipe}
            family.samples += [Sample(self.name + "_count", labels, float(cumulative)),
                               Sample(self.name + "_sum", labels, self._sums[recipe])]
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=["recipe"])


RUN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class SandboxMetrics:
    """The code sandbox: runs by status and their time (``on_run``), the queue, busy workers, refusals."""

    def __init__(self, registry: CollectorRegistry, sandbox: Any):
        r = registry
        self.executions = Counter("genrm_sandbox_executions", "Program runs (one per test), by how they ended.",
                                  ["status"], registry=r)
        self.run_seconds = Histogram("genrm_sandbox_run_seconds", "Wall time of one program run.",
                                     buckets=RUN_BUCKETS, registry=r)
        self.rejected = Counter("genrm_sandbox_rejected", "Requests refused with 503: every worker busy, queue full.",
                                registry=r)
        stats = sandbox.stats
        Gauge("genrm_sandbox_workers", "Sandbox workers (programs at once).", registry=r).set(sandbox.workers)
        Gauge("genrm_sandbox_busy_workers", "Workers holding a sample now.", registry=r).set_function(
            lambda: stats.sessions)
        Gauge("genrm_sandbox_queue", "Samples waiting for a sandbox worker.", registry=r).set_function(
            lambda: stats.queued)

    def on_run(self, run: Any) -> None:
        self.executions.labels(status=run.status).inc()
        self.run_seconds.observe(run.execution_time)
