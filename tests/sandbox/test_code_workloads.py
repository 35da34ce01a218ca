"""The code benchmark's workloads (bench/code_workloads.py) are what they claim: each reference program, run as
its own process, passes every test; each buggy one fails the first test only; verl's prime_code scores them
as the workloads record (its one known deviation included: no partial credit on call-based problems)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from code_workloads import WORKLOADS, Workload

# Calls the function the LiveCodeBench way (one JSON argument per stdin line) and prints the JSON result.
CALL = ("import json, sys\nargs = [json.loads(line) for line in sys.stdin.read().split('\\n')]\n"
        "print(json.dumps({fn}(*args)))\n")


def passes(w: Workload) -> list[bool]:
    """Each test run as ``python3 program`` with the test's stdin, compared token by token (exit 0 required)."""
    gt = w.ground_truth
    program = w.code + (CALL.format(fn=gt["fn_name"]) if "fn_name" in gt else "")
    results = []
    for stdin, expected in zip(gt["inputs"], gt["outputs"], strict=True):
        run = subprocess.run([sys.executable, "-c", program], input=stdin, capture_output=True, text=True,
                             timeout=30)
        if "fn_name" in gt:
            ok = run.returncode == 0 and json.loads(run.stdout) == json.loads(expected)
        else:
            ok = run.returncode == 0 and run.stdout.split() == expected.split()
        results.append(ok)
    return results


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_reference_runs_give_the_expected_score(name: str) -> None:
    w = WORKLOADS[name]
    results = passes(w)
    assert sum(results) / len(results) == w.expected_score
    if w.expected_score < 1:
        assert results == [False] + [True] * (len(results) - 1), "only the first test may fail"
    assert w.tests in (1, 10)


def test_samples_of_a_batch_differ_but_hold_the_same_program() -> None:
    w = WORKLOADS["stdio10"]
    a, b = w.completion(0), w.completion(1)
    assert a != b and w.code in a and w.code in b and a.count("```") == 2


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_prime_code_scores_as_recorded(name: str) -> None:
    prime_code = pytest.importorskip("verl.utils.reward_score.prime_code")
    w = WORKLOADS[name]
    score, _ = prime_code.compute_score(w.completion(), w.ground_truth_json(), continuous=True)
    assert float(score) == w.score_of("prime_code")
