"""The in-process vLLM engine's load gauges are vLLM's own scheduler counts, the metric the judges autoscale on.

vllm is not installed here: the reader is checked on a real prometheus registry holding gauges shaped as vLLM's
stat logger registers them (``vllm:num_requests_waiting{model_name, engine}``, one series per engine core).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from services.genrm_server.engines.vllm_engine import scheduler_gauge


def _vllm_registry(waiting: dict[str, float], running: dict[str, float]) -> CollectorRegistry:
    registry = CollectorRegistry()
    for name, values in (("vllm:num_requests_waiting", waiting), ("vllm:num_requests_running", running)):
        gauge = Gauge(name, "Scheduler count.", ["model_name", "engine"], registry=registry)
        for engine, value in values.items():
            gauge.labels(model_name="judge", engine=engine).set(value)
    return registry


def test_scheduler_gauges_sum_over_engines() -> None:
    registry = _vllm_registry(waiting={"0": 7, "1": 5}, running={"0": 64, "1": 3})
    assert scheduler_gauge("vllm:num_requests_waiting", registry) == 12
    assert scheduler_gauge("vllm:num_requests_running", registry) == 67


def test_scheduler_gauge_is_none_before_vllm_recorded_one() -> None:
    registry = CollectorRegistry()
    Gauge("vllm:kv_cache_usage_perc", "Another vLLM gauge.", registry=registry).set(0.5)
    assert scheduler_gauge("vllm:num_requests_waiting", registry) is None
