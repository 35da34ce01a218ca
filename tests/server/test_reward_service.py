"""services/genrm_server/reward_service.py and errors.py: request mistakes a newcomer makes, at a server
and through the router.

A batch item that is not an object gets its own item error (param ``samples.N``) and the other items are
scored, identically straight to a server and through the router's fan-out; a body sent without
``content-type: application/json`` (plain ``curl -d``) is told so.
"""

from __future__ import annotations

import httpx
import pytest

from services.local_stack import LocalStack
from tests.conftest import Child

GOOD = {"recipe": "math", "solution": "so \\boxed{4}", "ground_truth": "4", "group_id": "g1"}
BAD_ITEMS = [None, 5, "oops", [1], True]


def _urls(server: Child, stack: LocalStack) -> dict[str, str]:
    return {"server": server.url, "router": stack.url}


@pytest.mark.parametrize("path", ["server", "router"])
def test_a_non_object_item_gets_its_own_error_and_the_rest_are_scored(path: str, server: Child,
                                                                      stack: LocalStack) -> None:
    url = _urls(server, stack)[path]
    samples = [GOOD, *BAD_ITEMS, {**GOOD, "group_id": "g2", "solution": "\\boxed{5}"}]
    resp = httpx.post(url + "/v1/reward/batch", json={"samples": samples}, timeout=60)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["index"] for r in results] == list(range(len(samples)))
    assert results[0]["error"] is None and results[0]["result"]["score"] == 1.0
    assert results[-1]["error"] is None and results[-1]["result"]["score"] == -1.0
    for i, item in enumerate(results[1:-1], start=1):
        assert item["result"] is None
        assert item["error"]["param"] == f"samples.{i}"
        assert item["error"]["code"] == 400
        assert item["error"]["message"].startswith("a sample must be a JSON object, got ")


def test_the_item_errors_are_the_same_on_both_paths(server: Child, stack: LocalStack) -> None:
    body = {"samples": [None, GOOD, "oops", {**GOOD, "group_id": "g3"}]}
    direct = httpx.post(server.url + "/v1/reward/batch", json=body, timeout=60).json()
    routed = httpx.post(stack.url + "/v1/reward/batch", json=body, timeout=60).json()
    assert direct == routed


@pytest.mark.parametrize("path", ["server", "router"])
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_a_body_without_the_json_content_type_is_told_so(path: str, content_type: str | None, server: Child,
                                                         stack: LocalStack) -> None:
    headers = {"content-type": content_type} if content_type else {}
    resp = httpx.post(_urls(server, stack)[path] + "/v1/reward", content=b'{"solution": "x", "ground_truth": "1"}',
                      headers=headers, timeout=30)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == "body"
    assert "must be JSON sent with content-type: application/json" in error["message"]
    assert f"got content-type: {content_type or 'none'}" in error["message"]


def test_a_json_body_with_the_content_type_still_works(server: Child) -> None:
    resp = httpx.post(server.url + "/v1/reward", content=b'{"recipe": "math", "solution": "\\\\boxed{1}", '
                      b'"ground_truth": "1"}', headers={"content-type": "application/json; charset=utf-8"})
    assert resp.status_code == 200 and resp.json()["score"] == 1.0
