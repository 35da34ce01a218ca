"""router/app.py: which route needs which key (client, admin, none), and ``/ready`` with no reachable worker."""

from __future__ import annotations

import time

import httpx

from services.local_stack import free_port
from tests.support.router_calls import (
    ADMIN,
    ADMIN_KEY,
    ANY_MODEL_CHAT,
    CHAT_PATH,
    CLIENT_KEY,
    bearer,
    chat,
    error_of,
    port_of,
    seen,
)


def test_auth_roles_and_keys_never_reach_workers_or_logs(procs):
    worker = procs.echo("auth")
    router = procs.router([worker], "--api-keys", CLIENT_KEY, "--admin-api-keys", ADMIN_KEY, "--log-level", "info")
    client = bearer(CLIENT_KEY)

    # Probes are public.
    assert httpx.get(router.url + "/health", timeout=5).status_code == 200
    assert httpx.get(router.url + "/ready", timeout=5).status_code == 200

    # Proxied routes: no key / a wrong key -> 401 with a Bearer challenge; the right key -> 200.
    for headers in (None, bearer("sk-test-wrong-0000"), {"authorization": CLIENT_KEY}):
        resp = chat(router, headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "API key" in error_of(resp)["message"]
        assert error_of(resp)["param"] == "authorization"  # as the server names it
    resp = chat(router, headers=client)
    assert resp.status_code == 200 and resp.json()["worker"] == port_of(worker)
    # The scheme is case-insensitive.
    assert chat(router, headers={"authorization": f"bearer {CLIENT_KEY}"}).status_code == 200

    # Operational routes need a client key.
    for path in ("/metrics", "/workers"):
        assert httpx.get(router.url + path, timeout=5).status_code == 401
        assert httpx.get(router.url + path, headers=bearer("sk-test-wrong-0000"), timeout=5).status_code == 401
        assert httpx.get(router.url + path, headers=client, timeout=5).status_code == 200

    # The admin API needs the admin key; a client key is forbidden, none is unauthenticated.
    assert httpx.get(router.url + "/admin/workers", timeout=5).status_code == 401
    resp = httpx.get(router.url + "/admin/workers", headers=client, timeout=5)
    assert resp.status_code == 403 and "admin key" in error_of(resp)["message"]
    assert error_of(resp)["param"] == "authorization"
    resp = httpx.get(router.url + "/admin/workers", headers=ADMIN, timeout=5)
    assert resp.status_code == 200 and [w["url"] for w in resp.json()["workers"]] == [worker.url]
    assert chat(router, headers=ADMIN).status_code == 200  # an admin key is a client key too

    # The worker never saw the router's keys (nor a rejected request).
    got = seen(worker)
    assert len(got) == 3 and all(s["path"] == CHAT_PATH for s in got)
    assert [s["authorization"] for s in got] == [None, None, None]

    # Nor does the router's log, which does hold access lines (info level).
    router.stop()
    text = router.log_path.read_text(errors="replace")
    assert f"path={CHAT_PATH} status=200" in text, text[-2000:]
    for key in (CLIENT_KEY, ADMIN_KEY, "sk-test-wrong-0000"):
        assert key not in text


def test_router_with_no_reachable_worker_is_not_ready(logs):
    router = start_router_unready([f"http://127.0.0.1:{free_port()}"], logs)
    try:
        assert httpx.get(router.url + "/ready", timeout=5).status_code == 503
        resp = httpx.post(router.url + "/v1/chat/completions", json=ANY_MODEL_CHAT, timeout=10)
        assert resp.status_code == 503 and "retry-after" in resp.headers
    finally:
        router.stop()


def start_router_unready(workers: list[str], logs):
    from services.local_stack import spawn

    port = free_port()
    child = spawn(f"router-{port}", f"http://127.0.0.1:{port}",
                  ["route", "--port", str(port), "--workers", *workers, "--log-level", "warning"], log_dir=logs)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(child.url + "/health", timeout=1)
            return child
        except httpx.HTTPError:
            time.sleep(0.1)
    child.stop()
    raise AssertionError("router did not start")
