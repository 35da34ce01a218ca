"""services/genrm_server/recipes/fapo_judge_train.py: the reward for training a FAPO judge, from its boxed step
index against the labelled one."""

from __future__ import annotations

import pytest

from tests.support.reward_calls import post_reward


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
    result = post_reward(server.url, recipe="fapo_judge_train", solution=output, ground_truth=label,
                         extra_info={"num_steps": steps}).json()
    assert result["score"] == pytest.approx(score)
