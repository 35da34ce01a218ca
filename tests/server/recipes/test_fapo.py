"""services/genrm_server/recipes/fapo.py: every judge outcome against the scripted judge behind the openai engine
(so each is asserted exactly), the spec's prompt character for character, who is judged, the critique, failure
metrics and the flaw penalty; then the real engine path with the tiny model."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server
from tests.support.reward_calls import FAPO_KEYS, QUESTION, correct_solution, judge_prompts, post_reward

SPEC = Path(__file__).resolve().parents[4] / "shared" / "specs" / "fapo-judge.md"


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
    resp = post_reward(fapo_server.url, question=QUESTION, solution=correct_solution(reply), ground_truth="4")
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
    solution = correct_solution("<<reply:\\boxed{-1}>>") + " {ground_truth} [Ground Truth] {problem}"
    post_reward(fapo_server.url, question=QUESTION, solution=solution, ground_truth="4")
    expected = template.replace("{problem}", QUESTION, 1).replace("{ground_truth}", "4", 1)
    expected = expected.replace("{solution}", solution, 1)  # after the others: the solution is inserted verbatim
    assert judge_prompts(judge)[-1] == expected


def test_fapo_asks_the_judge_only_for_correct_training_samples(fapo_server, judge):
    before = len(judge_prompts(judge))
    wrong = post_reward(fapo_server.url, question=QUESTION, solution="\\boxed{5}", ground_truth="4").json()
    test_split = post_reward(fapo_server.url, question=QUESTION, solution=correct_solution("<<reply:\\boxed{1}>>"),
                             ground_truth="4", extra_info={"split": "test"}).json()
    assert len(judge_prompts(judge)) == before
    assert (wrong["score"], wrong["judge_asked"], wrong["judge_ok"]) == (-1.0, False, True)
    assert (test_split["score"], test_split["judge_asked"], test_split["flawed_positive"]) == (1.0, False, False)
    assert set(wrong) == set(test_split) == FAPO_KEYS


def test_fapo_critique_and_failure_metrics(fapo_server):
    failures = _metric(fapo_server.url, "genrm_reward_judge_failures_total", "fapo")
    flawed = _metric(fapo_server.url, "genrm_reward_flawed_positives_total", "fapo")
    ok = post_reward(fapo_server.url, question=QUESTION, solution=correct_solution("<<reply:bad step \\boxed{1}>>"),
                     ground_truth="4", return_critique=True).json()
    assert ok["critique"] == "bad step \\boxed{1}"
    post_reward(fapo_server.url, question=QUESTION, solution=correct_solution("<<reply:no box>>"), ground_truth="4")
    assert _metric(fapo_server.url, "genrm_reward_judge_failures_total", "fapo") == failures + 1
    assert _metric(fapo_server.url, "genrm_reward_flawed_positives_total", "fapo") == flawed + 1


def test_fapo_flaw_penalty_is_a_setting(judge, logs):
    server = start_server(judge.url, logs, "--engine", "openai", "--upstream-url", judge.url + "/v1",
                          "--fapo-flaw-penalty", "0.5", "--judge-timeout-s", "1", name="fapo-half")
    try:
        t0 = time.monotonic()
        slow = post_reward(server.url, recipe="fapo", question=QUESTION,
                           solution=correct_solution("<<sleep:4>> deadline"), ground_truth="4").json()
        assert (slow["judge_ok"], slow["score"]) == (False, 1.0) and time.monotonic() - t0 < 3  # judge deadline
        result = post_reward(server.url, recipe="fapo", question=QUESTION,
                             solution=correct_solution("<<reply:\\boxed{0}>>"), ground_truth="4").json()
        assert (result["score"], result["flawed_positive"]) == (0.5, True)
        recipes = httpx.get(server.url + "/v1/recipes", timeout=5).json()
        fapo = next(r for r in recipes["recipes"] if r["name"] == "fapo")
        assert fapo["settings"]["flaw_penalty"] == 0.5 and fapo["settings"]["judge_max_tokens"] == 16384
    finally:
        server.stop()


def test_fapo_with_the_tiny_model_runs_and_flags_garbage(server):
    """The real engine path: the tiny model's random text has no integer box -> judge_ok false, counted."""
    failures = _metric(server.url, "genrm_reward_judge_failures_total", "fapo")
    result = post_reward(server.url, recipe="fapo", question=QUESTION, solution=correct_solution(),
                         ground_truth="4").json()
    assert set(result) == FAPO_KEYS and result["judge_asked"] is True
    if result["judge_ok"]:  # a random model could, in principle, emit a box with an integer
        assert result["score"] in (0.0, 1.0)
    else:
        assert result["score"] == 1.0
        assert _metric(server.url, "genrm_reward_judge_failures_total", "fapo") == failures + 1
