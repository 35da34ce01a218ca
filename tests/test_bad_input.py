"""Every bad input gets a 4xx whose message names the field — at the server and through the router."""

from __future__ import annotations

import re

import httpx
import pytest

CHAT = [{"role": "user", "content": "hi"}]
CASES = [
    # (path, body, status, param, words that must appear in the message)
    ("/v1/chat/completions", {"messages": CHAT, "model": "gpt-17"}, 404, "model", ["gpt-17", "tiny"]),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 0}, 400, "max_tokens", ["max_tokens"]),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 10_000}, 400, "max_tokens", ["4096", "max_tokens"]),
    ("/v1/chat/completions", {"messages": CHAT, "n": 0}, 400, "n", ["n:"]),
    ("/v1/chat/completions", {"messages": CHAT, "n": -3}, 400, "n", ["n:"]),
    ("/v1/chat/completions", {"messages": CHAT, "temperature": "hot"}, 400, "temperature", ["temperature"]),
    ("/v1/chat/completions", {"messages": []}, 400, "messages", ["messages"]),
    ("/v1/chat/completions", {"max_tokens": 3}, 400, "messages", ["messages", "Field required"]),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role", ["role"]),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 5000}]}, 400, "messages",
     ["maximum context length"]),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p", ["top_p"]),
    ("/v1/completions", {"prompt": []}, 400, "prompt", ["prompt"]),
    ("/v1/completions", {"prompt": "x", "stop": [""]}, 400, "stop", ["stop"]),
    ("/v1/completions", ["not", "an", "object"], 400, "body", ["valid dictionary"]),
    # The batch route validates its body itself: unknown top-level fields are refused on both of its paths.
    ("/v1/reward/batch", {"samples": [], "extra": 1}, 400, "extra", ["extra", "not permitted"]),
    ("/v1/reward/batch", {"samples": [{"solution": 5}], "extra": 1}, 400, "extra", ["extra"]),
    ("/v1/reward/batch", {"samples": "all"}, 400, "samples", ["samples"]),
]


@pytest.mark.parametrize("target", ["server", "stack"])
@pytest.mark.parametrize(("path", "body", "status", "param", "words"), CASES)
def test_bad_request_names_the_field(target, path, body, status, param, words, request):
    url = request.getfixturevalue(target).url
    resp = httpx.post(url + path, json=body, timeout=30)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == status and error["param"] == param
    for word in words:
        assert word in error["message"], error["message"]


@pytest.mark.parametrize("target", ["server", "stack"])
def test_malformed_json(target, request):
    url = request.getfixturevalue(target).url
    resp = httpx.post(url + "/v1/chat/completions", content=b'{"messages": [', timeout=30,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert "malformed JSON" in resp.json()["error"]["message"]


def test_invalid_utf8_is_a_400(server):
    resp = httpx.post(server.url + "/v1/completions", content=b'{"prompt": "\xff\xfe"}', timeout=30,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400


def test_body_over_the_limit_is_413(server):
    big = {"prompt": "x" * 100_000, "max_tokens": 1}  # the fixture's server allows 64 KiB
    resp = httpx.post(server.url + "/v1/completions", json=big, timeout=30)
    assert resp.status_code == 413
    assert "max_body_bytes" in resp.json()["error"]["message"]


def test_body_over_the_limit_is_413_when_streamed_without_length(server):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    resp = httpx.post(server.url + "/v1/completions", content=chunks(), timeout=30)
    assert resp.status_code == 413


def test_unknown_route_uses_the_error_envelope(server):
    resp = httpx.get(server.url + "/v1/nothing-here", timeout=10)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == 404


def test_a_bad_batch_body_logs_no_traceback(server):
    """A 400 is the client's mistake: the server's log gets no ERROR / traceback for it."""
    before = server.log_path.read_text()
    resp = httpx.post(server.url + "/v1/reward/batch", json={"samples": "all"}, timeout=30)
    assert resp.status_code == 400
    new = server.log_path.read_text()[len(before):]
    assert "Traceback" not in new and "unhandled error" not in new, new


def test_the_batch_route_keeps_the_body_limit_and_request_metrics(server):
    """/v1/reward/batch is answered below FastAPI (reward_api.BatchRoute): the middleware around it still apply."""
    def count(status: str) -> float:
        text = httpx.get(server.url + "/metrics", timeout=5).text
        pattern = rf'^genrm_server_requests_total\{{route="/v1/reward/batch",status="{status}"\}} (\S+)'
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else 0.0

    ok, too_big = count("200"), count("413")
    big = {"samples": [{"solution": "x" * 100_000, "ground_truth": "1"}]}  # the fixture's server allows 64 KiB
    assert httpx.post(server.url + "/v1/reward/batch", json=big, timeout=30).status_code == 413
    good = httpx.post(server.url + "/v1/reward/batch", json={"samples": [{"solution": "\\boxed{1}",
                                                                          "ground_truth": "1"}]}, timeout=30)
    assert good.status_code == 200 and good.json()["results"][0]["result"]["score"] == 1.0
    assert good.headers["content-type"] == "application/json"
    assert (count("200"), count("413")) == (ok + 1, too_big + 1)
