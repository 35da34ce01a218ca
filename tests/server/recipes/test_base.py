"""services/genrm_server/recipes/base.py: a judge budget over the upstream's context is asked again without
max_tokens (as vLLM's 400 with param null says), not failed."""

from __future__ import annotations

from tests.support.reward_calls import QUESTION, correct_solution, post_reward


def test_judge_budget_over_the_upstream_context_is_retried_without_max_tokens(fapo_server):
    """vLLM answers 400 with param null when prompt + max_tokens exceeds its context: ask again without it."""
    result = post_reward(fapo_server.url, question=QUESTION,
                         solution=correct_solution("<<context_error>><<reply:\\boxed{2}>>"), ground_truth="4").json()
    assert (result["judge_ok"], result["flawed_positive"], result["score"]) == (True, True, 0.0)
