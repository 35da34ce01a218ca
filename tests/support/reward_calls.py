"""Reward calls the server tests make, and the sample text the scripted judge (tests/support/scripted_judge.py)
reads its orders from."""

from __future__ import annotations

import httpx

from services.local_stack import Child

QUESTION = "What is 2 + 2?"
FAPO_KEYS = {"score", "acc", "pred", "flawed_positive", "judge_verdict", "judge_ok", "judge_asked"}


def correct_solution(reply: str = "") -> str:
    """A right solution to QUESTION carrying ``reply`` (orders to the scripted judge, such as ``<<reply:...>>``)."""
    return f"Step 0: 2 + 2 = 4. {reply} The answer is \\boxed{{4}}."


def post_reward(url: str, **sample) -> httpx.Response:
    return httpx.post(url + "/v1/reward", json=sample, timeout=30)


def judge_prompts(judge: Child) -> list[str]:
    """Every prompt the scripted judge was asked, oldest first."""
    return httpx.get(judge.url + "/prompts", timeout=5).json()
