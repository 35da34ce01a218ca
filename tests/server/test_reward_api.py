"""services/genrm_server/reward_api.py: the reward routes on real servers: bad input named, a batch in order with
item-level errors and scored exactly as single calls, and the OpenRLHF and slime protocols."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.reward_calls import QUESTION, post_reward


@pytest.mark.parametrize(("sample", "status", "param"), [
    ({"solution": "\\boxed{4}"}, 400, "ground_truth"),
    ({"solution": "\\boxed{4}", "ground_truth": "4", "recipe": "astrology"}, 404, "recipe"),
    ({"solution": 42, "ground_truth": "4"}, 400, "solution"),
    ({"solution": ["a"], "ground_truth": "4"}, 400, "solution"),
    ({"ground_truth": "4"}, 400, "solution"),
    ({"solution": "x", "ground_truth": "4", "colour": "red"}, 400, "colour"),
    ({"recipe": "fapo_judge_train", "solution": "\\boxed{1}", "ground_truth": "1"}, 400, "extra_info.num_steps"),
    ({"recipe": "fapo_judge_train", "solution": "\\boxed{1}", "ground_truth": "+-1", "extra_info": {"num_steps": 3}},
     400, "ground_truth"),
    ({"recipe": "fapo_judge_train", "solution": "\\boxed{1}", "ground_truth": "\u00b2", "extra_info": {"num_steps": 3}},
     400, "ground_truth"),
    ({"recipe": "fapo_judge_train", "solution": "\\boxed{1}", "ground_truth": "9", "extra_info": {"num_steps": 3}},
     400, "ground_truth"),  # the label must be a step of the solution: no score outside [-1, 1]
    ({"recipe": "fapo", "solution": "\\boxed{5}", "ground_truth": "4"}, 400, "question"),  # even when wrong
])
def test_bad_reward_input_names_the_field(server, sample, status, param):
    resp = post_reward(server.url, **sample)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and param.split(".")[-1] in error["message"]


def test_batch_keeps_order_and_item_level_errors(stack):
    samples = [
        {"solution": "\\boxed{4}", "ground_truth": "4", "group_id": "g1"},
        {"ground_truth": "4"},
        {"solution": "\\boxed{4}", "ground_truth": "4", "recipe": "astrology"},
        {"solution": "\\boxed{3}", "ground_truth": "4", "group_id": "g1"},
    ]
    resp = httpx.post(stack.url + "/v1/reward/batch", json={"samples": samples}, timeout=30)
    assert resp.status_code == 200
    items = resp.json()["results"]
    assert [it["index"] for it in items] == [0, 1, 2, 3]
    assert items[0]["result"] == {"score": 1.0, "acc": True, "pred": "4"} and items[0]["error"] is None
    assert items[1]["error"]["param"] == "solution" and items[1]["error"]["code"] == 400
    assert items[2]["error"]["param"] == "recipe" and items[2]["error"]["code"] == 404
    assert items[3]["result"]["score"] == -1.0
    empty = httpx.post(stack.url + "/v1/reward/batch", json={"samples": []}, timeout=30)
    assert empty.status_code == 200 and empty.json() == {"results": []}


def test_a_valid_batch_scores_exactly_as_single_calls(server):
    """A batch of valid samples is validated into plain field dicts (RewardFields), single calls into models:
    same results and same item errors, aliases, number labels, null extra_info and overlong shaping included."""
    samples = [
        {"solution": "\\boxed{4}", "ground_truth": 4},
        {"response": "\\boxed{4.0}", "ground_truth": 4.0, "extra_info": None, "prompt": "2+2?"},
        {"solution": "\\boxed{5}", "ground_truth": "4", "extra_info": {"response_length": 90},
         "overlong": {"max_resp_len": 100, "buffer_len": 20}},
        {"solution_str": "\\boxed{1}", "ground_truth": True, "group_id": 7},
        {"solution": "\\boxed{4}"},  # valid, but the math recipe needs a label: an item error
        {"solution": "\\boxed{nan}", "ground_truth": float("nan")},  # NaN is no label either
        {"solution": "\\boxed{4}", "ground_truth": "4", "overlong": {"max_resp_len": 100, "buffer_len": 20}},
    ]
    def post(path: str, body: object) -> httpx.Response:  # json.dumps writes NaN as Python's json reads it
        return httpx.post(server.url + path, content=json.dumps(body), headers={"content-type": "application/json"},
                          timeout=30)

    items = post("/v1/reward/batch", {"samples": samples}).json()["results"]
    assert len(items) == len(samples)
    for sample, item in zip(samples, items, strict=True):
        single = post("/v1/reward", sample)
        if single.status_code == 200:
            assert item["error"] is None and item["result"] == single.json(), sample
        else:
            error = single.json()["error"]
            assert item["result"] is None and (item["error"]["code"], item["error"]["param"]) == (
                single.status_code, error["param"]), sample
    assert [it["error"]["param"] for it in items if it["error"]] == ["ground_truth", "ground_truth",
                                                                     "extra_info.response_length"]
    assert items[2]["result"]["overlong_penalty"] == pytest.approx(-0.5)


def test_extra_info_null_is_accepted(server):
    assert post_reward(server.url, solution="\\boxed{4}", ground_truth="4", extra_info=None).json()["score"] == 1.0


def test_openrlhf_protocol(stack, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                     add_generation_prompt=True)
    padding = "<|endoftext|>" * 3  # OpenRLHF left-pads and keeps special tokens when it decodes
    queries = [padding + prompt + "2 + 2 = \\boxed{4}<|im_end|><|endoftext|>", prompt + "\\boxed{5}<|im_end|>"]
    resp = httpx.post(stack.url + "/get_reward", json={"query": queries, "prompts": [prompt, prompt],
                                                       "labels": ["4", "4"]}, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["rewards"] == body["scores"] == [1.0, -1.0]
    assert body["extra_logs"] == {"acc": [1.0, 0.0]}
    assert all(isinstance(v, float) for values in body["extra_logs"].values() for v in values)
    empty = httpx.post(stack.url + "/get_reward", json={"query": [], "prompts": [], "labels": []}, timeout=30)
    assert empty.status_code == 200 and empty.json() == {"rewards": [], "scores": [], "extra_logs": {"acc": []}}


def test_slime_protocol(stack):
    resp = httpx.post(stack.url + "/slime/reward", json={"prompt": QUESTION, "response": "\\boxed{4}", "label": 4},
                      timeout=30)
    assert resp.status_code == 200 and resp.json() == {"score": 1.0, "acc": True, "pred": "4"}
