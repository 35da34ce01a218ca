"""services/genrm_server/recipes/genrm_verdict.py: the verdict is the judge's last box, exactly ``True`` or
``False`` (the scripted judge behind the openai engine)."""

from __future__ import annotations

import pytest

from tests.support.reward_calls import QUESTION, post_reward


@pytest.mark.parametrize(("reply", "score", "verdict", "ok"), [
    ("\\boxed{True}", 1.0, True, True),
    ("\\boxed{False}", 0.0, False, True),
    ("\\boxed{True} no, \\boxed{False}", 0.0, False, True),
    ("\\boxed{true}", 0.0, False, True),  # exactly `True` only
    ("it is fine", 0.0, None, False),
])
def test_verdict_recipe(fapo_server, reply, score, verdict, ok):
    result = post_reward(fapo_server.url, recipe="genrm_verdict", question=QUESTION,
                         solution=f"2 + 2 = 4 <<reply:{reply}>>").json()
    assert result == {"score": score, "verdict": verdict, "judge_ok": ok}
