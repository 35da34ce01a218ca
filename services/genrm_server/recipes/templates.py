"""The judge prompts the published GenRM models were trained on, character for character
(``specs/fapo-judge.md``), and an injection-safe way to fill them.
"""

from __future__ import annotations

import re

FAPO_PROMPT = (
    "The following is a math problem with its ground truth answer, along with an AI solution (split into steps):\n"
    "\n"
    "[Math Problem]\n"
    "\n"
    "{problem}\n"
    "\n"
    "[Ground Truth]\n"
    "\n"
    "{ground_truth}\n"
    "\n"
    "[AI Solution]\n"
    "\n"
    "{solution}\n"
    "\n"
    "Your task is to review and critique the solution step by step. Once you identify an error in a step, "
    "return the index of the step where the earliest error occurs. Otherwise, return the index of -1 (which "
    "typically denotes 'not found').\n"
    "\n"
    "Please reason step by step, put your final answer (i.e., the index) in \\boxed{}."
)

VERDICT_PROMPT = (
    "The following is a math problem and an AI solution:\n"
    "\n"
    "[Math Problem]\n"
    "\n"
    "{problem}\n"
    "\n"
    "[AI Solution]\n"
    "\n"
    "{solution}\n"
    "\n"
    "Your task is to review and critique the solution step by step, and output whether the AI solution is "
    "correct.\n"
    "\n"
    "Please put your final answer (i.e., 'True' or 'False') in \\boxed{}."
)

_FIELD = re.compile(r"\{(problem|ground_truth|solution)\}")


def fill(template: str, **values: str) -> str:
    """Substitute ``{problem}``-style fields in one pass: text inserted is never scanned again, so a solution
    containing ``{ground_truth}`` or the template's own headings cannot rewrite the prompt. (``str.format``
    would also choke on the literal ``\\boxed{}``.)"""
    return _FIELD.sub(lambda m: values[m.group(1)], template)
