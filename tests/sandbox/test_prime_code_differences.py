"""Where the code rule and verl's ``prime_code`` disagree, run side by side: the executable list of differences.

Each case runs verl 0.9.1's own ``prime_code.compute_score(completion, ground_truth, continuous=True)`` (how
verl's default reward calls it) in-process, and ``score_code`` over real processes. ``prime`` is the score
prime_code gives; ``ours`` the score and status of the code rule; ``why`` says which of them is right.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from services.sandbox.local import LocalSessions
from services.sandbox.scoring import score_code

prime_code = pytest.importorskip("verl.utils.reward_score.prime_code")

ADD = {"inputs": ["1 2\n", "3 4\n", "10 -3\n"], "outputs": ["3\n", "7\n", "7\n"]}


def py(code: str, tag: str = "python") -> str:
    return f"My solution:\n```{tag}\n{code}\n```\n"


@dataclass(frozen=True)
class Case:
    text: str
    ground_truth: dict[str, Any]
    prime: float
    ours: tuple[float, str]
    why: str


CASES: dict[str, Case] = {
    # spec §3: programs run as written; prime_code wraps stdin programs in a function and patches stdin
    "global": Case(py("total = 0\ndef add(k):\n    global total\n    total += k\n"
                      "for k in map(int, input().split()):\n    add(k)\nprint(total)"), ADD, 0.0, (1.0, "passed"),
                   "prime_code wraps the program in `def code():`, so module globals become locals"),
    "stdin.buffer": Case(py("import sys\na, b = map(int, sys.stdin.buffer.read().split())\nprint(a + b)"), ADD,
                         0.0, (1.0, "passed"), "prime_code's stdin is a StringIO: no .buffer"),
    "open(0)": Case(py("a, b = map(int, open(0).read().split())\nprint(a + b)"), ADD, 0.0, (1.0, "passed"),
                    "prime_code patches builtins.open, but its prelude bound `open` before that"),
    "exit()": Case(py("a, b = map(int, input().split())\nprint(a + b)\nexit()"), ADD, 0.0, (1.0, "passed"),
                   "prime_code's reliability_guard sets builtins.exit to None"),
    "double space": Case(py("a, b = map(int, input().split())\nprint(a, b, sep='  ')"),
                         {"inputs": ["1 2"], "outputs": ["1 2"]}, 0.0, (1.0, "passed"),
                         "prime_code compares stripped lines, not tokens"),
    "two floats on a line": Case(py("n = int(input())\nprint('%.7f %.7f' % (1 / n, 2 / n))"),
                                 {"inputs": ["3"], "outputs": ["0.333333 0.666667"]}, 0.0, (1.0, "passed"),
                                 "prime_code's float check parses whole lines, so two floats on one are text"),
    "```py fence": Case(py("a, b = map(int, input().split())\nprint(a + b)", tag="py"), ADD, 0.0, (1.0, "passed"),
                        "prime_code only splits on ```python: with ```py it runs the prose before the fence"),
    "non-zero exit after correct output": Case(
        py("a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(3)"), ADD, 1.0, (0.0, "runtime_error"),
        "prime_code catches SystemExit and ignores the exit status"),
    "call-based partial credit": Case(py("class Solution:\n    def f(self, x):\n        return 2 * x if x < 3 else 0"),
                                      {"fn_name": "f", "inputs": ["1", "2", "3"], "outputs": ["2", "4", "6"]},
                                      0.0, (2 / 3, "wrong_answer"),
                                      "prime_code's per-test re-runs drop fn_name: call-based is all or nothing"),
    "APPS/TACO call-based form": Case(py("def f(a, b):\n    return a + b"),
                                      {"fn_name": "f", "inputs": [[1, 2], [3, 4]], "outputs": [[3], [7]]},
                                      0.0, (1.0, "passed"),
                                      "prime_code calls inputs[i].split('\\n'): a list of arguments crashes it"),
    "call-based float return": Case(py("def f(a, b):\n    return a + b"),
                                    {"fn_name": "f", "inputs": ["0.1\n0.2"], "outputs": ["0.3"]}, 0.0, (1.0, "passed"),
                                    "prime_code compares return values with ==, no float tolerance"),
    "only the first 10 tests": Case(py("n = int(input())\nprint(n if n < 11 else -1)"),
                                    {"inputs": [str(i) for i in range(12)], "outputs": [str(i) for i in range(12)]},
                                    1.0, (11 / 12, "wrong_answer"),
                                    "prime_code scores the first 10 tests when any fails: a failing program gets 1.0"),
    "no fence": Case("a, b = map(int, input().split())\nprint(a + b)", ADD, 1.0, (0.0, "no_code"),
                     "spec §1.3: prose is never run; prime_code runs the whole completion"),
    "LiveCodeBench value vs one-element list": Case(py("def f(x):\n    return x"),
                                                    {"fn_name": "f", "inputs": ["5"], "outputs": ["[5]"]},
                                                    1.0, (0.0, "wrong_answer"),
                                                    "spec §2: the one-element wrap is the APPS form's; prime_code "
                                                    "accepts it for every call-based test"),
    "1 for true": Case(py("def f(x):\n    return 1"), {"fn_name": "f", "inputs": ["5"], "outputs": ["true"]},
                       1.0, (0.0, "wrong_answer"), "JSON true is not 1; prime_code compares with Python's =="),
    "names a stdio program never imported": Case(py("print(int(sqrt(int(input()))))"),
                                                 {"inputs": ["16"], "outputs": ["4"]}, 1.0, (0.0, "runtime_error"),
                                                 "prime_code prepends `from math import *` etc. to stdio programs; "
                                                 "a real judge runs them as written (NameError)"),
    # where the two agree (the spec's list of prime_code false negatives names sys.exit(0); it passes there)
    "sys.exit(0) after output": Case(py("import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(0)"),
                                     ADD, 1.0, (1.0, "passed"), "both: prime_code catches SystemExit"),
    "syntax error": Case(py("print(1"), ADD, 0.0, (0.0, "compile_error"), "both fail"),
    "integers are exact": Case(py("print(1000001)"), {"inputs": [""], "outputs": ["1000000"]}, 0.0,
                               (0.0, "wrong_answer"), "both: prime_code's float check skips integer lines"),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_side_by_side(name: str) -> None:
    case = CASES[name]
    prime, _ = prime_code.compute_score(case.text, json.dumps(case.ground_truth), continuous=True)
    ours = await score_code(LocalSessions(), case.text, case.ground_truth)
    assert float(prime) == pytest.approx(case.prime), f"prime_code: {case.why}"
    assert (ours.score, ours.status) == (pytest.approx(case.ours[0]), case.ours[1]), case.why
