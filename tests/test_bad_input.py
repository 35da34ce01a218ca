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
    _error(resp, 400, "body", "malformed JSON body", "utf-8")  # was FastAPI's "error parsing the body", no field


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


# -- issue 7: nesting, non-finite numbers, sizes ------------------------------------------------

JSON = {"content-type": "application/json"}
JSON_ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/reward", "/v1/reward/batch", "/get_reward",
               "/slime/reward"]


def _error(resp: httpx.Response, status: int, param: str | None, *words: str) -> dict:
    assert resp.status_code == status, resp.text[:500]
    error = resp.json()["error"]
    assert error["code"] == status and error["param"] == param, error
    for word in words:
        assert word in error["message"], error["message"]
    return error


@pytest.mark.parametrize("target", ["server", "stack"])
@pytest.mark.parametrize("path", JSON_ROUTES)
def test_deeply_nested_json_is_a_400_naming_the_body(target, path, request):
    """100k levels of nesting: a 400, never a RecursionError 500 (FastAPI's json.loads, the router's parse for
    affinity and fan-out) nor a crash. The fixture's server takes 64 KiB bodies: 32k levels there."""
    child = request.getfixturevalue(target)
    depth = 100_000 if target == "stack" else 32_000
    bodies = ["[" * depth + "]" * depth, '{"samples": ' + "[" * depth + "]" * depth + "}",
              '{"a":' * (depth // 5) + "1" + "}" * (depth // 5)]
    for body in bodies:
        resp = httpx.post(child.url + path, content=body.encode(), headers=JSON, timeout=30)
        _error(resp, 400, "body", "malformed JSON body")
    assert httpx.get(child.url + "/health", timeout=5).status_code == 200


SOLVED = '"solution": "\\\\boxed{1}"'
NON_FINITE = [
    # (path, raw JSON body, status, param, words in the message)
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400,
     "temperature", ["temperature"]),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}', 400,
     "temperature", ["temperature"]),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "top_p": -Infinity}', 400,
     "top_p", ["top_p"]),
    ("/v1/completions", '{"prompt": "hi", "max_tokens": NaN}', 400, "max_tokens", ["max_tokens", "finite"]),
    ("/v1/completions", '{"prompt": "hi", "max_tokens": Infinity}', 400, "max_tokens", ["max_tokens", "finite"]),
    ("/v1/completions", '{"prompt": "hi", "max_tokens": 1e400}', 400, "max_tokens", ["max_tokens", "finite"]),
    # A seed past 64 bits overflowed in torch (a 500).
    ("/v1/completions", '{"prompt": "hi", "max_tokens": 1, "seed": 99999999999999999999999}', 400, "seed",
     ["seed"]),
    ("/v1/completions", '{"prompt": "hi", "seed": 1' + "0" * 5000 + "}", 400, "body",
     ["malformed JSON body", "4300"]),
    # A NaN / ±Infinity label is a missing one (as orjson sends it: null), never the answer text "nan".
    ("/v1/reward", '{"solution": "\\\\boxed{nan}", "ground_truth": NaN}', 400, "ground_truth",
     ["ground_truth", "required"]),
    ("/v1/reward", '{"solution": "\\\\boxed{inf}", "ground_truth": Infinity}', 400, "ground_truth",
     ["ground_truth", "required"]),
    ("/get_reward", '{"query": ["\\\\boxed{1}"], "prompts": [""], "labels": [NaN]}', 400, "ground_truth",
     ["sample 0", "ground_truth"]),
    ("/slime/reward", '{"response": "\\\\boxed{1}", "label": -Infinity}', 400, "ground_truth", ["ground_truth"]),
    # A union's member tags (group_id.str, group_id.int) are dropped: the param is the field the client sent.
    ("/v1/reward", '{"solution": "x", "ground_truth": 1, "group_id": NaN}', 400, "group_id",
     ["group_id: Input should be a valid string or a finite number"]),
    ("/v1/reward", '{"solution": "x", "ground_truth": [1]}', 400, "ground_truth",
     ["ground_truth: Input should be a valid string, a valid integer or a valid number"]),
    ("/v1/reward", '{"solution": "x", "extra_info": [1]}', 400, "extra_info",
     ["extra_info: Input should be a valid dictionary or None"]),
    # An Infinity penalty factor made the score -inf: JSON null in a 200. Overflowing ones are refused too.
    ("/v1/reward", "{" + SOLVED + ', "ground_truth": 1, "overlong": {"max_resp_len": 10, "buffer_len": 5, '
     '"penalty_factor": Infinity}, "extra_info": {"response_length": 12}}', 400, "overlong.penalty_factor",
     ["finite"]),
    ("/v1/reward", "{" + SOLVED + ', "ground_truth": 1, "overlong": {"max_resp_len": 10, "buffer_len": 5}, '
     '"extra_info": {"response_length": 1' + "0" * 400 + "}}", 400, "extra_info.response_length", ["overflows"]),
    ("/v1/reward", "{" + SOLVED + ', "ground_truth": 1, "overlong": {"max_resp_len": 10, "buffer_len": 5}, '
     '"extra_info": {"response_length": NaN}}', 400, "extra_info.response_length", ["response_length"]),
]


@pytest.mark.parametrize("target", ["server", "stack"])
@pytest.mark.parametrize(("path", "body", "status", "param", "words"), NON_FINITE,
                         ids=[f"{i}-{case[0]}-{case[3]}" for i, case in enumerate(NON_FINITE)])
def test_nan_and_infinity_literals(target, path, body, status, param, words, request):
    url = request.getfixturevalue(target).url
    resp = httpx.post(url + path, content=body.encode(), headers=JSON, timeout=30)
    _error(resp, status, param, *words)


@pytest.mark.parametrize("target", ["server", "stack"])
def test_nan_in_a_batch_item_or_an_unused_field(target, request):
    url = request.getfixturevalue(target).url
    body = ('{"samples": [{' + SOLVED + ', "ground_truth": NaN}, {' + SOLVED + ', "ground_truth": 1, '
            '"extra_info": {"unused": NaN, "also": [Infinity, -Infinity]}}]}')
    resp = httpx.post(url + "/v1/reward/batch", content=body.encode(), headers=JSON, timeout=30)
    assert resp.status_code == 200, resp.text
    first, second = resp.json()["results"]
    assert first["error"]["param"] == "ground_truth" and first["result"] is None
    assert second["result"]["score"] == 1.0  # a NaN nobody reads is harmless


@pytest.mark.parametrize("target", ["server", "stack"])
def test_a_100k_character_solution(target, request):
    """Scored correctly (the answer's last box counts), or at the fixture's 64 KiB server a 413 naming the limit."""
    url = request.getfixturevalue(target).url
    for answer, score in (("42", 1.0), ("41", -1.0)):
        solution = "Let me think. " * 7_200 + f"So the answer is \\boxed{{{answer}}}."
        assert len(solution) > 100_000
        resp = httpx.post(url + "/v1/reward", json={"solution": solution, "ground_truth": "42"}, timeout=30)
        if target == "server":
            _error(resp, 413, "body", "max_body_bytes")
        else:
            assert resp.status_code == 200 and resp.json()["score"] == score, resp.text


@pytest.mark.parametrize("target", ["server", "stack"])
def test_empty_batch_is_an_empty_answer(target, request):
    url = request.getfixturevalue(target).url
    resp = httpx.post(url + "/v1/reward/batch", json={"samples": []}, timeout=30)
    assert resp.status_code == 200 and resp.json() == {"results": []}


def _numbered_batch(n: int) -> tuple[list[dict], list[float]]:
    """Sample i answers i; its label is i, except every third is wrong: the scores show the order."""
    samples = [{"solution": f"\\boxed{{{i}}}", "ground_truth": i if i % 3 else i + 1} for i in range(n)]
    return samples, [-1.0 if i % 3 == 0 else 1.0 for i in range(n)]


def test_a_10k_item_batch_over_the_body_limit_is_413(server):
    samples, _ = _numbered_batch(10_000)  # ~400 KB; the fixture's server takes 64 KiB
    _error(httpx.post(server.url + "/v1/reward/batch", json={"samples": samples}, timeout=60), 413, "body",
           "max_body_bytes")


@pytest.mark.parametrize("target", ["server", "stack"])
def test_a_batch_over_16384_samples_is_a_400_naming_samples(target, request):
    url = request.getfixturevalue(target).url
    body = b'{"samples": [' + b",".join([b"{}"] * 16_385) + b"]}"  # 48 KiB: under the fixture's body limit
    _error(httpx.post(url + "/v1/reward/batch", content=body, headers=JSON, timeout=60), 400, "samples",
           "16384")


def test_the_schema_documents_the_errors_the_server_gives(server):
    """FastAPI's default 422 + HTTPValidationError is not what the server answers: the schema says 400 (and
    413) in the error envelope, and a bad body's real answer matches that schema's shape."""
    doc = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (method, path)
            if "requestBody" in op:
                for status in ("400", "413"):
                    schema = op["responses"][status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
    envelope = doc["components"]["schemas"]["ErrorResponse"]
    resp = httpx.post(server.url + "/v1/reward", json={"ground_truth": "4"}, timeout=10)
    assert resp.status_code == 400 and set(resp.json()) == set(envelope["properties"]) == {"error"}
