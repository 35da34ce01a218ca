"""The GenRM server's own API keys and TLS: real server and router processes on 127.0.0.1.

With ``--api-keys``, every route but the probes answers 401 without a valid key (keys never logged); the
router reaches such servers with ``--worker-api-key``, probes and model/recipe learning included. With
``--ssl-certfile``/``--ssl-keyfile`` the server speaks HTTPS (uvicorn's certificate options).
"""

from __future__ import annotations

import ssl

import httpx
import pytest

from services.local_stack import free_port, spawn
from tests.conftest import start_router, start_server, wait_for
from tests.support.certificates import self_signed

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


def test_https_with_a_self_signed_certificate(tiny_model, logs, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    server = spawn(f"server-tls-{port}", f"https://127.0.0.1:{port}",
                   ["serve", "--model", str(tiny_model), "--port", str(port), "--ssl-certfile", str(cert),
                    "--ssl-keyfile", str(key), "--log-level", "warning"], log_dir=logs)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        def ready() -> bool:
            assert server.process.poll() is None, f"server exited:\n{server.log_tail()}"
            try:
                return httpx.get(server.url + "/ready", verify=trust, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "the HTTPS server", timeout_s=60, every_s=0.2)
        resp = httpx.post(server.url + "/v1/reward", json=SAMPLE, verify=trust, timeout=10)
        assert resp.status_code == 200 and resp.json()["score"] == 1.0
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port is refused
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        with pytest.raises(httpx.ConnectError):  # and an untrusted certificate is not accepted silently
            httpx.get(server.url + "/health", timeout=2)
    finally:
        server.stop()
