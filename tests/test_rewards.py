"""The reward API end to end: recipes on real servers, a scripted judge process behind the openai engine
(so every judge outcome is asserted exactly), item-level batch errors, OpenRLHF and slime protocols."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from services.local_stack import Child
from tests.conftest import start_server

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "fapo-judge.md"
FAPO_KEYS = {"score", "acc", "pred", "flawed_positive", "judge_verdict", "judge_ok", "judge_asked"}
QUESTION = "What is 2 + 2?"


def _correct(reply: str = "") -> str:
    return f"Step 0: 2 + 2 = 4. {reply} The answer is \\boxed{{4}}."


def _reward(url: str, **sample) -> httpx.Response:
    return httpx.post(url + "/v1/reward", json=sample, timeout=30)


def _prompts(judge: Child) -> list[str]:
    return httpx.get(judge.url + "/prompts", timeout=5).json()


def _metric(url: str, name: str, recipe: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    match = re.search(rf'^{name}\{{recipe="{recipe}"\}} (\S+)', text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(
    ("reply", "score", "flawed", "verdict", "ok"),
    [
        ("<<reply:no flaw, \\boxed{-1}>>", 1.0, False, -1, True),
        ("<<reply:Step 2 is wrong. \\boxed{2}>>", 0.0, True, 2, True),
        ("<<reply:\\boxed{0} then \\boxed{ +3 }>>", 0.0, True, 3, True),  # the last box counts
        ("<<reply:I cannot decide.>>", 1.0, False, None, False),  # no box: rule score kept, flagged
        ("<<reply:\\boxed{__import__('os')}>>", 1.0, False, None, False),  # not an integer, never evaluated
        ("<<reply:\\boxed{1.5}>>", 1.0, False, None, False),
        ("<<sleep:3>>", 1.0, False, None, False),  # judge timeout (upstream_timeout_s 1)
    ],
)
def test_fapo_judge_outcomes(fapo_server, reply, score, flawed, verdict, ok):
    resp = _reward(fapo_server.url, question=QUESTION, solution=_correct(reply), ground_truth="4")
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert set(result) == FAPO_KEYS
    assert (result["score"], result["flawed_positive"], result["judge_verdict"], result["judge_ok"]) == (
        score, flawed, verdict, ok)
    assert result["acc"] is True and result["pred"] == "4" and result["judge_asked"] is True


def test_fapo_prompt_is_the_spec_template_character_for_character(fapo_server, judge):
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} not found (shared/ must sit beside the repository)")
    template = SPEC.read_text().split("\n----\n")[1]
    solution = _correct("<<reply:\\boxed{-1}>>") + " {ground_truth} [Ground Truth] {problem}"
    _reward(fapo_server.url, question=QUESTION, solution=solution, ground_truth="4")
    expected = template.replace("{problem}", QUESTION, 1).replace("{ground_truth}", "4", 1)
    expected = expected.replace("{solution}", solution, 1)  # after the others: the solution is inserted verbatim
    assert _prompts(judge)[-1] == expected


def test_fapo_asks_the_judge_only_for_correct_training_samples(fapo_server, judge):
    before = len(_prompts(judge))
    wrong = _reward(fapo_server.url, question=QUESTION, solution="\\boxed{5}", ground_truth="4").json()
    test_split = _reward(fapo_server.url, question=QUESTION, solution=_correct("<<reply:\\boxed{1}>>"),
                         ground_truth="4", extra_info={"split": "test"}).json()
    assert len(_prompts(judge)) == before
    assert (wrong["score"], wrong["judge_asked"], wrong["judge_ok"]) == (-1.0, False, True)
    assert (test_split["score"], test_split["judge_asked"], test_split["flawed_positive"]) == (1.0, False, False)
    assert set(wrong) == set(test_split) == FAPO_KEYS


def test_fapo_critique_and_failure_metrics(fapo_server):
    failures = _metric(fapo_server.url, "genrm_reward_judge_failures_total", "fapo")
    flawed = _metric(fapo_server.url, "genrm_reward_flawed_positives_total", "fapo")
    ok = _reward(fapo_server.url, question=QUESTION, solution=_correct("<<reply:bad step \\boxed{1}>>"),
                 ground_truth="4", return_critique=True).json()
    assert ok["critique"] == "bad step \\boxed{1}"
    _reward(fapo_server.url, question=QUESTION, solution=_correct("<<reply:no box>>"), ground_truth="4")
    assert _metric(fapo_server.url, "genrm_reward_judge_failures_total", "fapo") == failures + 1
    assert _metric(fapo_server.url, "genrm_reward_flawed_positives_total", "fapo") == flawed + 1


def test_fapo_flaw_penalty_is_a_setting(judge, logs):
    server = start_server(judge.url, logs, "--engine", "openai", "--upstream-url", judge.url + "/v1",
                          "--fapo-flaw-penalty", "0.5", "--judge-timeout-s", "1", name="fapo-half")
    try:
        t0 = time.monotonic()
        slow = _reward(server.url, recipe="fapo", question=QUESTION, solution=_correct("<<sleep:4>> deadline"),
                       ground_truth="4").json()
        assert (slow["judge_ok"], slow["score"]) == (False, 1.0) and time.monotonic() - t0 < 3  # judge deadline
        result = _reward(server.url, recipe="fapo", question=QUESTION, solution=_correct("<<reply:\\boxed{0}>>"),
                         ground_truth="4").json()
        assert (result["score"], result["flawed_positive"]) == (0.5, True)
        recipes = httpx.get(server.url + "/v1/recipes", timeout=5).json()
        fapo = next(r for r in recipes["recipes"] if r["name"] == "fapo")
        assert fapo["settings"]["flaw_penalty"] == 0.5 and fapo["settings"]["judge_max_tokens"] == 16384
    finally:
        server.stop()


@pytest.mark.parametrize(("reply", "score", "verdict", "ok"), [
    ("\\boxed{True}", 1.0, True, True),
    ("\\boxed{False}", 0.0, False, True),
    ("\\boxed{True} no, \\boxed{False}", 0.0, False, True),
    ("\\boxed{true}", 0.0, False, True),  # exactly `True` only
    ("it is fine", 0.0, None, False),
])
def test_verdict_recipe(fapo_server, reply, score, verdict, ok):
    result = _reward(fapo_server.url, recipe="genrm_verdict", question=QUESTION,
                     solution=f"2 + 2 = 4 <<reply:{reply}>>").json()
    assert result == {"score": score, "verdict": verdict, "judge_ok": ok}


@pytest.mark.parametrize(("output", "label", "steps", "score"), [
    ("\\boxed{-1}", "-1", 5, 1.0),
    ("\\boxed{2}", "-1", 5, -1.0),
    ("\\boxed{-1}", "2", 5, -1.0),
    ("\\boxed{2}", "2", 5, 1.0),
    ("\\boxed{4}", "2", 5, 0.6),
    ("\\boxed{5}", "2", 5, -1.0),  # outside [0, T)
    ("\\boxed{-2}", "-1", 5, -1.0),
    ("no answer", "2", 5, -1.0),
])
def test_fapo_judge_training_reward(server, output, label, steps, score):
    result = _reward(server.url, recipe="fapo_judge_train", solution=output, ground_truth=label,
                     extra_info={"num_steps": steps}).json()
    assert result["score"] == pytest.approx(score)


def test_math_recipe_and_recipe_list(server):
    right = _reward(server.url, solution="so x = \\boxed{\\frac12}", ground_truth="\\frac{1}{2}").json()
    wrong = _reward(server.url, solution="Answer: 7", ground_truth="8").json()
    assert right == {"score": 1.0, "acc": True, "pred": "\\frac{1}{2}"}
    assert wrong == {"score": -1.0, "acc": False, "pred": "[INVALID]"}  # default mode is boxed
    listed = httpx.get(server.url + "/v1/recipes", timeout=5).json()
    assert listed["default"] == "math"
    by_name = {r["name"]: r for r in listed["recipes"]}
    assert {"math", "fapo", "genrm_verdict", "fapo_judge_train"} <= set(by_name)
    assert by_name["fapo"]["keys"][0] == "score" and set(by_name["fapo"]["keys"]) == FAPO_KEYS
    assert by_name["fapo"]["uses_judge"] is True and by_name["math"]["settings"] == {"mode": "boxed"}


def test_fapo_with_the_tiny_model_runs_and_flags_garbage(server):
    """The real engine path: the tiny model's random text has no integer box -> judge_ok false, counted."""
    failures = _metric(server.url, "genrm_reward_judge_failures_total", "fapo")
    result = _reward(server.url, recipe="fapo", question=QUESTION, solution=_correct(), ground_truth="4").json()
    assert set(result) == FAPO_KEYS and result["judge_asked"] is True
    if result["judge_ok"]:  # a random model could, in principle, emit a box with an integer
        assert result["score"] in (0.0, 1.0)
    else:
        assert result["score"] == 1.0
        assert _metric(server.url, "genrm_reward_judge_failures_total", "fapo") == failures + 1


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
    resp = _reward(server.url, **sample)
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
    assert _reward(server.url, solution="\\boxed{4}", ground_truth="4", extra_info=None).json()["score"] == 1.0


def test_overlong_shaping_is_opt_in(server):
    base = {"solution": "\\boxed{4}", "ground_truth": "4", "extra_info": {"response_length": 90}}
    plain = _reward(server.url, **base).json()
    assert plain == {"score": 1.0, "acc": True, "pred": "4"}  # off by default: verl's DAPO manager adds it
    shaped = _reward(server.url, **base, overlong={"max_resp_len": 100, "buffer_len": 20, "penalty_factor": 1.0})
    assert shaped.json()["overlong_penalty"] == pytest.approx(-0.5) and shaped.json()["score"] == pytest.approx(0.5)
    short = _reward(server.url, **{**base, "extra_info": {"response_length": 50}},
                    overlong={"max_resp_len": 100, "buffer_len": 20})
    assert short.json()["overlong_penalty"] == 0.0
    missing = _reward(server.url, solution="\\boxed{4}", ground_truth="4",
                      overlong={"max_resp_len": 100, "buffer_len": 20})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "extra_info.response_length"


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


def test_reward_metrics_count_by_recipe(server):
    before = httpx.get(server.url + "/metrics", timeout=5).text
    _reward(server.url, solution="\\boxed{4}", ground_truth="4")
    after = httpx.get(server.url + "/metrics", timeout=5).text
    pattern = r'^genrm_reward_samples_total\{outcome="ok",recipe="math"\} (\S+)'
    count = [float(m.group(1)) if (m := re.search(pattern, t, re.M)) else 0.0 for t in (before, after)]
    assert count[1] == count[0] + 1


def test_identical_judge_requests_coalesce_then_hit_the_cache(fapo_server, judge):
    sample = {"question": QUESTION, "solution": _correct("<<sleep:0.5>><<reply:\\boxed{1}>> coalesce"),
              "ground_truth": "4"}
    before = len(_prompts(judge))
    hits_before = _cache_hits(fapo_server.url)  # the server is shared by the session: count from here

    async def burst():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(fapo_server.url + "/v1/reward", json={**sample, "extra_info": {"index": i}})
                for i in range(4)
            ))

    results = [r.json() for r in asyncio.run(burst())]
    assert len(_prompts(judge)) == before + 1  # four identical samples, one judge call
    assert all(r == results[0] for r in results) and results[0]["flawed_positive"] is True
    again = _reward(fapo_server.url, **sample, extra_info={"index": 99}).json()  # index is not read by fapo
    assert again == results[0] and len(_prompts(judge)) == before + 1
    other_split = _reward(fapo_server.url, **sample, extra_info={"split": "test"}).json()
    assert other_split["judge_asked"] is False  # split is part of the key: no stale verdict
    hits = _cache_hits(fapo_server.url)
    assert (hits["coalesced"] - hits_before["coalesced"], hits["hit"] - hits_before["hit"]) == (3.0, 1.0)


def _cache_hits(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    found = dict(re.findall(r'^genrm_reward_cache_hits_total\{kind="(\w+)",recipe="fapo"\} (\S+)', text, re.M))
    return {kind: float(found.get(kind, 0.0)) for kind in ("coalesced", "hit")}


def test_judge_budget_over_the_upstream_context_is_retried_without_max_tokens(fapo_server):
    """vLLM answers 400 with param null when prompt + max_tokens exceeds its context: ask again without it."""
    result = _reward(fapo_server.url, question=QUESTION, solution=_correct("<<context_error>><<reply:\\boxed{2}>>"),
                     ground_truth="4").json()
    assert (result["judge_ok"], result["flawed_positive"], result["score"]) == (True, True, 0.0)


def test_failed_judge_results_are_not_cached(fapo_server, judge):
    sample = {"question": QUESTION, "solution": _correct("<<reply:undecided, no box>> nocache"), "ground_truth": "4"}
    before = len(_prompts(judge))
    for _ in range(2):
        assert _reward(fapo_server.url, **sample).json()["judge_ok"] is False
    assert len(_prompts(judge)) == before + 2


def test_math_verify_mode_is_symbolic_and_opt_in(tiny_model, logs, server):
    symbolic = start_server(tiny_model, logs, "--math-mode", "math_verify", name="mv")
    try:
        half = {"solution": "so the answer is \\boxed{0.5}", "ground_truth": "\\frac{1}{2}"}
        assert _reward(symbolic.url, **half).json()["score"] == 1.0
        assert _reward(symbolic.url, solution="\\boxed{0.6}", ground_truth="\\frac{1}{2}").json()["acc"] is False
        assert _reward(server.url, **half).json()["score"] == -1.0  # the default mode keeps the seeds' semantics
    finally:
        symbolic.stop()


def test_judge_calls_count_in_the_servers_token_counters(server):
    """Dashboards read tokens/s from genrm_server_*_tokens: reward traffic (judge calls) must count there."""
    def tokens(text: str, name: str) -> float:
        m = re.search(rf"^genrm_server_{name}_tokens_total\{{[^}}]*\}} (\S+)", text, re.M)
        return float(m.group(1)) if m else 0.0

    before = httpx.get(server.url + "/metrics", timeout=5).text
    result = _reward(server.url, recipe="fapo", question=QUESTION, solution="token count \\boxed{4}",
                     ground_truth="4").json()
    after = httpx.get(server.url + "/metrics", timeout=5).text
    assert result["judge_asked"] is True
    assert tokens(after, "prompt") - tokens(before, "prompt") > 20  # the judge prompt, template included
    assert tokens(after, "generation") > tokens(before, "generation")


def test_a_batch_counts_every_score_in_the_histogram(server):
    """Judge-free samples of a batch are counted at once: count, buckets and the _sum (a mean score) agree."""
    def series(text: str) -> dict[str, float]:
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^genrm_reward_score_(count|sum|bucket\{le="-1\.0",recipe="math"\})(?:\{recipe="math"\})? (\S+)',
            text, re.M)}

    before = series(httpx.get(server.url + "/metrics", timeout=5).text)
    samples = [{"solution": f"\\boxed{{{4 if i % 3 else 5}}}", "ground_truth": "4"} for i in range(30)]
    body = httpx.post(server.url + "/v1/reward/batch", json={"samples": samples}, timeout=30).json()
    scores = [item["result"]["score"] for item in body["results"]]
    after = series(httpx.get(server.url + "/metrics", timeout=5).text)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    assert scores.count(-1.0) == 10 and scores.count(1.0) == 20
    assert delta["count"] == 30 and delta["sum"] == sum(scores) == 10.0
    assert delta['bucket{le="-1.0",recipe="math"}'] == 10  # the -1 scores sit in the first bucket
