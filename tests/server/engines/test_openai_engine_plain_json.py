"""The openai engine in front of an upstream that answers a streamed request with plain JSON (a proxy or a
hosted judge ignoring ``"stream": true``): the judge's verdict still counts, FAPO included."""

from __future__ import annotations

import httpx

from services.local_stack import Child


def test_fapo_reads_a_plain_json_answer(fapo_server: Child, judge: Child) -> None:
    solution = "Step 0: 2 + 2 = 4. <<no_stream>><<reply:Step 0 is wrong. \\boxed{0}>> The answer is \\boxed{4}."
    resp = httpx.post(fapo_server.url + "/v1/reward", json={"question": "What is 2 + 2?", "solution": solution,
                                                             "ground_truth": "4"}, timeout=30)
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert (result["judge_ok"], result["judge_verdict"], result["flawed_positive"], result["score"]) == (
        True, 0, True, 0.0)


def test_chat_through_the_engine_reads_a_plain_json_answer(fapo_server: Child) -> None:
    body = {"messages": [{"role": "user", "content": "<<no_stream>><<reply:plain answer>>"}], "max_tokens": 8}
    resp = httpx.post(fapo_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "plain answer"
    assert resp.json()["usage"]["completion_tokens"] == 3
