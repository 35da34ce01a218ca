"""services/genrm_server/errors.py: every bad input gets a 4xx in OpenAI's envelope whose message names the field,
at the server and through the router (which passes the server's answer on, or answers alike where it parses)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.envelope import expect_error

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
    expect_error(resp, 400, "body", "malformed JSON body", "utf-8")  # was FastAPI's "error parsing the body", no field


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


JSON = {"content-type": "application/json"}


JSON_ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/reward", "/v1/reward/batch", "/get_reward",
               "/slime/reward"]


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
        expect_error(resp, 400, "body", "malformed JSON body")
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
     ["ground_truth: Input should be a valid string, a valid integer, a valid number or a valid dictionary"]),
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
    expect_error(resp, status, param, *words)


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
            expect_error(resp, 413, "body", "max_body_bytes")
        else:
            assert resp.status_code == 200 and resp.json()["score"] == score, resp.text


@pytest.mark.parametrize("target", ["server", "stack"])
def test_empty_batch_is_an_empty_answer(target, request):
    url = request.getfixturevalue(target).url
    resp = httpx.post(url + "/v1/reward/batch", json={"samples": []}, timeout=30)
    assert resp.status_code == 200 and resp.json() == {"results": []}


@pytest.mark.parametrize("target", ["server", "stack"])
def test_a_batch_over_16384_samples_is_a_400_naming_samples(target, request):
    url = request.getfixturevalue(target).url
    body = b'{"samples": [' + b",".join([b"{}"] * 16_385) + b"]}"  # 48 KiB: under the fixture's body limit
    expect_error(httpx.post(url + "/v1/reward/batch", content=body, headers=JSON, timeout=60), 400, "samples",
                 "16384")
