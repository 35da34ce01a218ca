"""What a router test sends: requests to a router under test, and questions to the echo workers behind it.

Echo workers (tests/support/echo_worker.py) name their port in every answer, take orders at ``/control`` and
list what they received at ``/seen``.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.local_stack import Child

CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "judge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
ANY_MODEL_CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}  # names no model: any worker
# Distinctive keys: a check that a log holds none of them must not match anything by accident.
CLIENT_KEY = "sk-test-client-7f3a9c2e"
OTHER_CLIENT_KEY = "sk-test-client-other-41d0"
ADMIN_KEY = "sk-test-admin-b81e4d6f"
WORKER_KEY = "sk-test-worker-52c0aa17"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_KEY)
CLIENT = bearer(CLIENT_KEY)
# Tests that need sequential requests spread over two workers rotate: the load-aware default policy may
# mark one echo worker a straggler over sub-millisecond latency noise and send it nothing.
ROTATE = ("--policy", "round_robin")


def port_of(child: Child | str) -> int:
    url = child if isinstance(child, str) else child.url
    return int(url.rsplit(":", 1)[1])


def control(worker: Child, **state: Any) -> None:
    assert httpx.post(worker.url + "/control", json=state, timeout=5).status_code == 200


def seen(worker: Child, path: str | None = None) -> list[dict]:
    """What the echo worker received (all of it, or the requests to ``path``), oldest first."""
    entries = httpx.get(worker.url + "/seen", timeout=5).json()
    return [e for e in entries if path is None or e["path"] == path]


def chat(router: Child, content: str = "hi", model: str = "judge", headers: dict[str, str] | None = None,
         timeout: float = 30, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(router.url + CHAT_PATH, json=body, headers=headers, timeout=timeout)


def reward(router: Child, group_id: int | None = None, recipe: str = "math", question: str = "1+1?",
           timeout: float = 10) -> httpx.Response:
    body: dict[str, Any] = {"recipe": recipe, "question": question, "solution": "\\boxed{2}", "ground_truth": "2"}
    if group_id is not None:
        body["group_id"] = group_id
    return httpx.post(router.url + "/v1/reward", json=body, timeout=timeout)


def answered_by(resp: httpx.Response) -> int:
    """The port of the echo worker that answered a 200."""
    assert resp.status_code == 200, resp.text
    return resp.json()["worker"]


def workers_of(router: Child | str, headers: dict[str, str] | None = None) -> dict[str, dict]:
    """The router's ``/workers`` by URL (``router`` is the router or its base URL)."""
    url = router if isinstance(router, str) else router.url
    resp = httpx.get(url + "/workers", headers=headers, timeout=5)
    assert resp.status_code == 200, resp.text
    return {w["url"]: w for w in resp.json()["workers"]}


def ready_status(router: Child) -> int:
    return httpx.get(router.url + "/ready", timeout=5).status_code


def error_of(resp: httpx.Response) -> dict:
    """The error of an answer that is OpenAI's error envelope and nothing else, its code the HTTP status."""
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == resp.status_code
    return body["error"]
