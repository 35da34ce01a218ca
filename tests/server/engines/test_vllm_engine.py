"""services/genrm_server/engines/vllm_engine.py: the engine serves the tiny model where vLLM and a GPU are present,
and appends vLLM's own metric families to the server's /metrics (checked on a real prometheus registry holding
vLLM-named families, which needs no vLLM)."""

from __future__ import annotations

import importlib.util

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from services.genrm_server.engines.vllm_engine import _VLLMFamilies
from tests.conftest import start_server


def _vllm_skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (GPU production engine; pip install 'genrm-platform[vllm]')"
    import torch

    if not torch.cuda.is_available():
        return "the vllm engine needs a CUDA GPU and none is visible"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_vllm_skip_reason() is not None, reason=_vllm_skip_reason() or "")
def test_vllm_engine_serves_the_tiny_model(tiny_model, logs):
    child = start_server(tiny_model, logs, "--engine", "vllm", "--gpu-memory-utilization", "0.3", name="vllm")
    try:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "ignore_eos": True}
        resp = httpx.post(child.url + "/v1/chat/completions", json=body, timeout=120).json()
        assert resp["usage"]["completion_tokens"] == 8
    finally:
        child.stop()


def test_vllm_families_are_exported_except_the_servers_own_gauges():
    registry = CollectorRegistry()
    Counter("vllm:prefix_cache_hits", "Prefix cache hits.", ["engine"], registry=registry).labels("0").inc(5)
    Gauge("vllm:num_requests_running", "Running.", registry=registry).set(3)  # the server exports its own
    Counter("python_gc_runs", "Not vLLM's.", registry=registry).inc()
    text = generate_latest(_VLLMFamilies(registry)).decode()
    assert 'vllm:prefix_cache_hits_total{engine="0"} 5.0' in text
    assert "num_requests_running" not in text and "python_gc_runs" not in text
