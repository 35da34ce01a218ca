"""Reward samples the tests send, built so the expected scores are known without running the rule."""

from __future__ import annotations


def math_sample(i: int, right: bool = True) -> dict:
    answer = str(i) if right else str(i + 1)
    return {"question": f"What is {i}?", "solution": f"so \\boxed{{{answer}}}", "ground_truth": str(i),
            "group_id": i % 4}


def numbered_batch(n: int) -> tuple[list[dict], list[float]]:
    """Sample i answers i; its label is i, except every third is wrong: the scores show the order."""
    samples = [{"solution": f"\\boxed{{{i}}}", "ground_truth": i if i % 3 else i + 1} for i in range(n)]
    return samples, [-1.0 if i % 3 == 0 else 1.0 for i in range(n)]
