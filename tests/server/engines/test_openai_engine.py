"""services/genrm_server/engines/openai_engine.py in front of a real upstream process (another GenRM server):
chat, completions and streams as the upstream answers, its 4xx passed on, a dead upstream a clear 503."""

from __future__ import annotations

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
