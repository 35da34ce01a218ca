"""The code-reward benchmark's workloads: problems, model completions and test cases (issue 17's (a)-(d)).

Each workload is one sample as a verl code dataset holds it: a completion (the policy's text, the program in a
fenced block) and a ``ground_truth`` of test cases in the form verl's code datasets use
(specs/code-rule.md §2). Every contender scores the same samples, so the programs are written to run under
all of them: stdin is read with ``sys.stdin.read()`` (prime_code patches it; ``sys.stdin.buffer`` would fail
there) and call-based tests use the LiveCodeBench form (one JSON value per line), the one form both verl
paths (prime_code and its sandbox_fusion client) parse. Outputs are exact text (verl's sandbox_fusion client
compares ``stdout.rstrip("\\n")`` with the expected text).

- (a) ``trivial``: A+B, one test.
- (b) ``stdio10``: read n integers, print their sum and the sorted list; 10 tests, n from 1 to 10,000.
- (c) ``call10``: APPS-style top-level function ``max_window_sum(nums, k)``; 10 tests, up to 10,000 numbers.
- (d) ``stdio10_fail1`` / ``call10_fail1``: the same problems with a solution wrong on the first (smallest)
  test only: a wrong answer with exit status 0, the other nine pass.

``expected_score`` is the score specs/code-rule.md gives (continuous: tests passed / tests run);
``verl_scores`` what verl's two paths give, where they differ from it (prime_code has no partial credit on
call-based problems). Tests import this module to check the workloads themselves.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

TESTS = 10  # verl scores the first 10 tests of a sample


@dataclass(frozen=True)
class Workload:
    key: str  # (a), (b), ... as issue 17 names them
    name: str
    title: str
    code: str  # the program, as the policy wrote it
    ground_truth: dict[str, Any]
    expected_score: float  # per specs/code-rule.md (continuous)
    verl_scores: dict[str, float] = field(default_factory=dict)  # contender -> its score, where it differs
    language: str = "python"

    def completion(self, variant: int = 0) -> str:
        """The policy's text: prose, then the program in a fenced block. ``variant`` adds a comment so that
        no two samples of a batch are the same text (nothing may cache a program across samples)."""
        return (f"The approach is straightforward; here is the program.\n\n```python\n# sample {variant}\n"
                f"{self.code}```\n")

    @property
    def tests(self) -> int:
        return len(self.ground_truth["inputs"])

    def score_of(self, contender: str) -> float:
        """The score ``contender`` should give this workload (its known deviation, else the spec's)."""
        return self.verl_scores.get(contender, self.expected_score)

    def ground_truth_json(self) -> str:
        return json.dumps(self.ground_truth)


TRIVIAL_CODE = "a, b = map(int, input().split())\nprint(a + b)\n"

SORT_SUM_CODE = '''import sys


def main():
    data = sys.stdin.read().split()
    n = int(data[0])
    xs = sorted(int(x) for x in data[1:1 + n])
    print(sum(xs))
    print(" ".join(map(str, xs)))


main()
'''

# Wrong when there is a single number (prints 0 as its sum): the first test only.
SORT_SUM_BUGGY_CODE = SORT_SUM_CODE.replace("print(sum(xs))", "print(sum(xs) if n > 1 else 0)")

WINDOW_CODE = '''def max_window_sum(nums, k):
    """The largest sum of k consecutive numbers."""
    window = sum(nums[:k])
    best = window
    for i in range(k, len(nums)):
        window += nums[i] - nums[i - k]
        best = max(best, window)
    return best
'''

# Wrong when the window is the whole list (returns 0): the first test only.
WINDOW_BUGGY_CODE = WINDOW_CODE.replace('    window = sum(nums[:k])\n',
                                        '    if k == len(nums):\n        return 0\n    window = sum(nums[:k])\n')

SIZES = (1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)  # test i has SIZES[i] numbers


def sort_sum_tests(seed: int = 17) -> dict[str, Any]:
    rng = random.Random(seed)
    inputs, outputs = [], []
    for n in SIZES:
        xs = [rng.randint(-10**6, 10**6) for _ in range(n)]
        inputs.append(f"{n}\n{' '.join(map(str, xs))}\n")
        ys = sorted(xs)
        outputs.append(f"{sum(ys)}\n{' '.join(map(str, ys))}\n")
    return {"inputs": inputs, "outputs": outputs}


def window_tests(seed: int = 18) -> dict[str, Any]:
    """LiveCodeBench form: ``inputs[i]`` one JSON value per line (one line per argument), ``outputs[i]`` JSON."""
    rng = random.Random(seed)
    inputs, outputs = [], []
    for i, n in enumerate(SIZES):
        nums = [rng.randint(-1000, 1000) for _ in range(n)]
        k = n if i == 0 else rng.randint(1, n - 1)  # only test 0 has the window the whole list
        best = max(sum(nums[j:j + k]) for j in range(n - k + 1)) if n <= 1000 else _window_max(nums, k)
        inputs.append(f"{json.dumps(nums)}\n{json.dumps(k)}")
        outputs.append(json.dumps(best))
    return {"inputs": inputs, "outputs": outputs, "fn_name": "max_window_sum"}


def _window_max(nums: list[int], k: int) -> int:
    prefix = [0]
    for x in nums:
        prefix.append(prefix[-1] + x)
    return max(prefix[j + k] - prefix[j] for j in range(len(nums) - k + 1))


def _workloads() -> dict[str, Workload]:
    trivial = {"inputs": ["2 3\n"], "outputs": ["5\n"]}
    stdio, call = sort_sum_tests(), window_tests()
    ws = [
        Workload("a", "trivial", "trivial program (A+B, 1 test)", TRIVIAL_CODE, trivial, 1.0),
        Workload("b", "stdio10", "10-test stdin/stdout, all pass", SORT_SUM_CODE, stdio, 1.0),
        Workload("c", "call10", "10-test call-based, all pass", WINDOW_CODE, call, 1.0),
        Workload("d", "stdio10_fail1", "10-test stdin/stdout, test 1 fails", SORT_SUM_BUGGY_CODE, stdio, 0.9),
        # prime_code re-runs each test alone without fn_name after a failure: call-based gets no partial credit.
        Workload("d", "call10_fail1", "10-test call-based, test 1 fails", WINDOW_BUGGY_CODE, call, 0.9,
                 {"prime_code": 0.0}),
    ]
    return {w.name: w for w in ws}


WORKLOADS: dict[str, Workload] = _workloads()
