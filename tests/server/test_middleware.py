"""services/genrm_server/middleware.py: the server's own API keys (every route but the probes needs one, keys never
logged; the router reaches such servers with ``--worker-api-key``, probes and model learning included) and the body
limit (with or without a length, on the batch route too, which is answered below FastAPI).
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import start_router, start_server, wait_for
from tests.support.envelope import expect_error
from tests.support.samples import numbered_batch

KEYS = ("server-key-one", "server-key-two")


SAMPLE = {"recipe": "math", "solution": "so \\boxed{4}", "ground_truth": "4"}


@pytest.fixture(scope="module")
def keyed_server(tiny_model, logs):
    child = start_server(tiny_model, logs, "--api-keys", ",".join(KEYS), name="keyed")
    yield child
    child.stop()


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_probes_are_open_and_everything_else_needs_a_key(keyed_server):
    url = keyed_server.url
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    assert httpx.get(url + "/ready", timeout=10).status_code == 200
    for method, path, body in [("POST", "/v1/reward", SAMPLE), ("POST", "/v1/reward/batch", {"samples": [SAMPLE]}),
                               ("GET", "/metrics", None), ("GET", "/v1/models", None),
                               ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})]:
        for headers in ({}, _bearer("wrong"), {"authorization": KEYS[0]}):  # none, wrong, not a Bearer
            resp = httpx.request(method, url + path, json=body, headers=headers, timeout=10)
            assert resp.status_code == 401, (path, headers, resp.text)
            assert resp.json()["error"]["param"] == "authorization"
    for key in KEYS:
        resp = httpx.post(url + "/v1/reward", json=SAMPLE, headers=_bearer(key), timeout=10)
        assert resp.status_code == 200 and resp.json()["score"] == 1.0
    assert httpx.get(url + "/metrics", headers=_bearer(KEYS[1]), timeout=10).status_code == 200
    log = keyed_server.log_path.read_text()
    assert not any(k in log for k in KEYS)


def test_the_router_reaches_keyed_servers_with_its_worker_key(keyed_server, logs):
    router = start_router([keyed_server.url], logs, "--worker-api-key", KEYS[0], "--health-interval-s", "0.2")
    try:
        # Probes pass and /v1/models was learned with the key: the model is listed by the router.
        models = wait_for(lambda: httpx.get(router.url + "/v1/models", timeout=5).json().get("data"),
                          "the router to learn the keyed server's models")
        assert models[0]["id"] == "tiny"
        resp = httpx.post(router.url + "/v1/reward", json=SAMPLE, timeout=10)
        assert resp.status_code == 200 and resp.json()["score"] == 1.0
    finally:
        router.stop()


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


def test_a_10k_item_batch_over_the_body_limit_is_413(server):
    samples, _ = numbered_batch(10_000)  # ~400 KB; the fixture's server takes 64 KiB
    expect_error(httpx.post(server.url + "/v1/reward/batch", json={"samples": samples}, timeout=60), 413, "body",
                 "max_body_bytes")
