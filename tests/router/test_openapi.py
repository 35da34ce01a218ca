"""``GET /openapi.json`` of the router (router/openapi.py): its own routes + its workers' API, keys, no worker."""

from __future__ import annotations

import httpx

from services.local_stack import free_port, spawn
from tests.conftest import start_router, start_script, wait_for

CLIENT_KEY, ADMIN_KEY = "sk-openapi-client-5e21", "sk-openapi-admin-90ab"
OWN = {"/health": {"get"}, "/ready": {"get"}, "/metrics": {"get"}, "/workers": {"get"},
       "/admin/workers": {"get", "post", "delete"}, "/admin/workers/drain": {"post"}}


def _error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == resp.status_code, body
    assert body["error"]["message"]
    return body["error"]


def test_router_schema_is_its_own_routes_plus_the_workers_api(stack):
    resp = httpx.get(stack.url + "/openapi.json", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json", resp.text
    doc = resp.json()
    worker = httpx.get(stack.servers[0].url + "/openapi.json", timeout=10).json()
    assert doc["openapi"] == worker["openapi"] and doc["info"]["title"] == "genrm-platform router"

    # The router's own routes; its /health, /ready and /metrics replace the worker's.
    for path, methods in OWN.items():
        assert set(doc["paths"][path]) == methods, path
    assert doc["paths"]["/health"]["get"]["operationId"] == "router_health"
    assert doc["paths"]["/admin/workers"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"] == ["url"]

    # Every other route of the worker, as the worker documents it, plus the errors the router itself answers.
    proxied = set(worker["paths"]) - set(OWN)
    assert {"/v1/chat/completions", "/v1/reward", "/v1/reward/batch", "/get_reward", "/slime/reward"} <= proxied
    assert set(doc["paths"]) == proxied | set(OWN)
    for path in proxied:
        for method, op in worker["paths"][path].items():
            mine = doc["paths"][path][method]
            assert mine.get("requestBody") == op.get("requestBody")
            assert mine["responses"]["200"] == op["responses"]["200"]
            assert {"502", "503", "504"} <= set(mine["responses"]), (path, method)
            assert ("413" in mine["responses"]) == ("requestBody" in op), (path, method)
            assert "401" not in mine["responses"]  # no keys on this router
    assert set(worker["components"]["schemas"]) <= set(doc["components"]["schemas"])  # the worker has ErrorResponse
    error = doc["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorInfo"}
    assert "security" not in doc and "securitySchemes" not in doc["components"]
    # Every $ref resolves.
    refs = {v for v in _walk(doc) if isinstance(v, str) and v.startswith("#/components/schemas/")}
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(doc["components"]["schemas"])


def _walk(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)
    else:
        yield node


def test_router_schema_needs_a_client_key_when_keys_are_set(server, logs):
    router = start_router([server.url], logs, "--api-keys", CLIENT_KEY, "--admin-api-keys", ADMIN_KEY)
    try:
        for headers in (None, {"authorization": "Bearer sk-wrong"}):
            resp = httpx.get(router.url + "/openapi.json", headers=headers, timeout=10)
            assert resp.status_code == 401 and "API key" in _error_of(resp)["message"]
        for key in (CLIENT_KEY, ADMIN_KEY):
            resp = httpx.get(router.url + "/openapi.json", headers={"authorization": f"Bearer {key}"}, timeout=10)
            assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["security"] == [{"bearer": []}]
        assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert doc["paths"]["/health"]["get"]["security"] == [] and doc["paths"]["/ready"]["get"]["security"] == []
        assert "401" in doc["paths"]["/v1/reward"]["post"]["responses"]
        assert {"401", "403"} <= set(doc["paths"]["/admin/workers"]["get"]["responses"])
    finally:
        router.stop()


def test_router_schema_keeps_its_copy_when_workers_go_and_is_503_without_one(logs):
    """A stale copy beats none; with none (no worker ever ready) a 503 in the envelope, not a partial schema."""
    echo = start_script("support/echo_worker.py", log_dir=logs, name="openapi-echo")
    router = start_router([echo.url], logs, "--health-interval-s", "0.2", "--health-failure-threshold", "1")
    dead_port = free_port()
    lonely = spawn(f"router-lonely-{dead_port}", "", ["route", "--workers", f"http://127.0.0.1:{free_port()}",
                                                      "--port", str(dead_port), "--log-level", "warning"],
                   log_dir=logs)
    try:
        first = httpx.get(router.url + "/openapi.json", timeout=10)
        assert first.status_code == 200 and "/seen" in first.json()["paths"]  # the echo worker's own routes
        assert httpx.post(echo.url + "/control", json={"ready": False}, timeout=5).status_code == 200
        wait_for(lambda: httpx.get(router.url + "/ready", timeout=5).status_code == 503, "the worker out")
        again = httpx.get(router.url + "/openapi.json", timeout=10)
        assert again.status_code == 200 and again.json() == first.json()

        lonely_url = f"http://127.0.0.1:{dead_port}"
        wait_for(lambda: _answers(lonely_url + "/health"), "the lonely router", timeout_s=30)
        resp = httpx.get(lonely_url + "/openapi.json", timeout=10)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert "no worker is ready" in _error_of(resp)["message"]
    finally:
        for child in (lonely, router, echo):
            child.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
