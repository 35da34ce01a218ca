"""Server-sent events: well-formed chunks, ``[DONE]`` last, same text as the blocking response."""

from __future__ import annotations

import json

import httpx
import pytest


def _events(url: str, path: str, body: dict) -> list[str]:
    with httpx.stream("POST", url + path, json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    assert raw.endswith("\n\n")
    events = [block for block in raw.split("\n\n") if block]
    assert all(e.startswith("data: ") for e in events), events[:3]
    return [e[len("data: "):] for e in events]


@pytest.mark.parametrize("target", ["server", "stack"])
def test_chat_stream_matches_blocking_response(target, request):
    url = request.getfixturevalue(target).url
    body = {"messages": [{"role": "user", "content": "Judge this."}], "max_tokens": 24, "temperature": 0,
            "stream_options": {"include_usage": True}}
    events = _events(url, "/v1/chat/completions", {**body, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    finals = [c for c in chunks[:-1] if c["choices"][0]["finish_reason"] is not None]
    assert len(finals) == 1 and finals[0] is chunks[-2]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    blocking = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    assert streamed == blocking["choices"][0]["message"]["content"]
    assert finals[0]["choices"][0]["finish_reason"] == blocking["choices"][0]["finish_reason"]


def test_completion_stream_with_n(server):
    body = {"prompt": "Step 1:", "max_tokens": 6, "n": 2, "ignore_eos": True, "stream": True, "seed": 1,
            "temperature": 1.0}
    events = _events(server.url, "/v1/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    finished = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"][0]["finish_reason"]}
    assert finished == {0: "length", 1: "length"}


def test_stream_error_before_first_byte_is_a_plain_4xx(server):
    body = {"prompt": "x " * 5000, "max_tokens": 4, "stream": True}
    resp = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert resp.status_code == 400
    assert "maximum context length" in resp.json()["error"]["message"]
