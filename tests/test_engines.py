"""The openai engine in front of a real upstream process, and the vllm engine where it can run."""

from __future__ import annotations

import importlib.util
import json
import time

import httpx
import pytest

from services.local_stack import free_port, spawn
from tests.conftest import start_server


@pytest.fixture(scope="module")
def proxied(server, logs):
    """A GenRM server whose engine forwards to the session's transformers server."""
    child = start_server(server.url, logs, "--engine", "openai", "--upstream-url", server.url + "/v1", name="oai")
    yield child
    child.stop()


def test_openai_engine_chat_and_completion(proxied, server):
    assert httpx.get(proxied.url + "/v1/models", timeout=10).json()["data"][0]["id"] == "tiny"
    body = {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 6, "temperature": 0}
    via = httpx.post(proxied.url + "/v1/chat/completions", json=body, timeout=60).json()
    direct = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert via["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    assert via["usage"] == direct["usage"]
    comp = httpx.post(proxied.url + "/v1/completions", json={"prompt": "x", "max_tokens": 4, "ignore_eos": True,
                                                              "n": 2}, timeout=60).json()
    assert [c["finish_reason"] for c in comp["choices"]] == ["length", "length"]
    assert comp["usage"]["completion_tokens"] == 8


def test_openai_engine_streams(proxied):
    body = {"prompt": "Step", "max_tokens": 5, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", proxied.url + "/v1/completions", json=body, timeout=60) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


def test_openai_engine_passes_upstream_4xx(proxied):
    resp = httpx.post(proxied.url + "/v1/completions", json={"prompt": "x " * 5000, "max_tokens": 3}, timeout=60)
    assert resp.status_code == 400
    assert "maximum context length" in resp.json()["error"]["message"]


def test_openai_engine_upstream_down_is_a_clear_503(logs):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    port = free_port()
    child = spawn("oai-dead", f"http://127.0.0.1:{port}",
                  ["serve", "--port", str(port), "--engine", "openai", "--upstream-url", dead,
                   "--upstream-model", "judge", "--log-level", "warning"], log_dir=logs)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(child.url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert httpx.get(child.url + "/ready", timeout=10).status_code == 503
        resp = httpx.post(child.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]},
                          timeout=30)
        assert resp.status_code == 503
        assert dead in resp.json()["error"]["message"] and "unreachable" in resp.json()["error"]["message"]
    finally:
        child.stop()


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


def test_top_k_one_is_greedy(server):
    body = {"prompt": "Step 1:", "max_tokens": 12, "ignore_eos": True}
    greedy = httpx.post(server.url + "/v1/completions", json={**body, "temperature": 0}, timeout=30).json()
    sampled = httpx.post(server.url + "/v1/completions", json={**body, "temperature": 1.5, "top_k": 1, "seed": 3},
                         timeout=30).json()
    assert sampled["choices"][0]["text"] == greedy["choices"][0]["text"]


def test_sampling_defaults_come_from_the_written_generation_config(tiny_model, tmp_path, logs, server):
    """Like vLLM: a judge whose generation_config.json says top_k samples that way when a request is silent."""
    import json
    import shutil

    model = tmp_path / "topk1"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**config, "do_sample": True, "top_k": 1}))
    child = start_server(model, logs, name="topk1")
    try:
        body = {"prompt": "Step 1:", "max_tokens": 12, "ignore_eos": True}
        silent = httpx.post(child.url + "/v1/completions", json={**body, "seed": 5}, timeout=30).json()
        greedy = httpx.post(server.url + "/v1/completions", json={**body, "temperature": 0}, timeout=30).json()
        assert silent["choices"][0]["text"] == greedy["choices"][0]["text"]
        free = httpx.post(child.url + "/v1/completions", json={**body, "top_k": 0, "seed": 5}, timeout=30).json()
        assert free["choices"][0]["text"] != greedy["choices"][0]["text"]  # the request's own top_k wins
    finally:
        child.stop()
