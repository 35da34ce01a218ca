"""services/genrm_server/recipes/math_recipe.py: the rule's semantics on a real server (the default mode is boxed),
the recipe list, and the symbolic math_verify mode (opt-in)."""

from __future__ import annotations

import httpx

from tests.conftest import start_server
from tests.support.reward_calls import FAPO_KEYS, post_reward


def test_math_recipe_and_recipe_list(server):
    right = post_reward(server.url, solution="so x = \\boxed{\\frac12}", ground_truth="\\frac{1}{2}").json()
    wrong = post_reward(server.url, solution="Answer: 7", ground_truth="8").json()
    assert right == {"score": 1.0, "acc": True, "pred": "\\frac{1}{2}"}
    assert wrong == {"score": -1.0, "acc": False, "pred": "[INVALID]"}  # default mode is boxed
    listed = httpx.get(server.url + "/v1/recipes", timeout=5).json()
    assert listed["default"] == "math"
    by_name = {r["name"]: r for r in listed["recipes"]}
    assert {"math", "fapo", "genrm_verdict", "fapo_judge_train"} <= set(by_name)
    assert by_name["fapo"]["keys"][0] == "score" and set(by_name["fapo"]["keys"]) == FAPO_KEYS
    assert by_name["fapo"]["uses_judge"] is True and by_name["math"]["settings"] == {"mode": "boxed"}


def test_math_verify_mode_is_symbolic_and_opt_in(tiny_model, logs, server):
    symbolic = start_server(tiny_model, logs, "--math-mode", "math_verify", name="mv")
    try:
        half = {"solution": "so the answer is \\boxed{0.5}", "ground_truth": "\\frac{1}{2}"}
        assert post_reward(symbolic.url, **half).json()["score"] == 1.0
        assert post_reward(symbolic.url, solution="\\boxed{0.6}", ground_truth="\\frac{1}{2}").json()["acc"] is False
        assert post_reward(server.url, **half).json()["score"] == -1.0  # the default mode keeps the seeds' semantics
    finally:
        symbolic.stop()
