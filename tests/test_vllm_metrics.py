"""The in-process vLLM engine appends vLLM's own metric families to the server's /metrics (vllm is not installed
here, so the view is checked on a real prometheus registry holding vLLM-named families)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from services.genrm_server.engines.vllm_engine import _VLLMFamilies


def test_vllm_families_are_exported_except_the_servers_own_gauges():
    registry = CollectorRegistry()
    Counter("vllm:prefix_cache_hits", "Prefix cache hits.", ["engine"], registry=registry).labels("0").inc(5)
    Gauge("vllm:num_requests_running", "Running.", registry=registry).set(3)  # the server exports its own
    Counter("python_gc_runs", "Not vLLM's.", registry=registry).inc()
    text = generate_latest(_VLLMFamilies(registry)).decode()
    assert 'vllm:prefix_cache_hits_total{engine="0"} 5.0' in text
    assert "num_requests_running" not in text and "python_gc_runs" not in text
