"""Symbolic answer equivalence with HF ``math-verify`` (the opt-in ``math_verify`` mode of the math recipe).

Runs in a worker process (see ``cpu_pool``): math-verify's own time limits use signals, which work in a
worker's main thread. It never changes the default (string-normalising) mode of specs/math-rule.md.
"""

from __future__ import annotations


def verify_answer(solution: str, ground_truth: str, timeout_s: int) -> tuple[bool, str]:
    """``(equivalent, extracted answer)``; an answer that cannot be parsed is not equivalent."""
    from math_verify import parse, verify

    gold = parse(f"${ground_truth}$" if "$" not in ground_truth and "\\boxed" not in ground_truth else ground_truth,
                 parsing_timeout=timeout_s)
    answer = parse(solution, parsing_timeout=timeout_s)
    pred = str(answer[-1]) if answer else ""
    if not gold or not answer:
        return False, pred
    return bool(verify(gold, answer, timeout_seconds=timeout_s)), pred
