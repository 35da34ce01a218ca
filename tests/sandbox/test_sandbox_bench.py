"""bench/sandbox_bench.py runs end to end on what is here (verl's prime_code), checks each score, prints the
table, and names the reason for every contender it skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_prime_code_and_skips_the_unavailable() -> None:
    pytest.importorskip("verl.utils.reward_score.prime_code")
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sandbox_bench.py"), "--contenders", "prime_code,ours-http-batch",
         "--workloads", "trivial,call10_fail1", "--samples", "2", "--repeats", "1"],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skipped ours-http-batch: no --genrm-url" in run.stdout
    rows = {tuple(c.strip() for c in line.split("|")[1:4]) for line in run.stdout.splitlines() if "|" in line}
    # prime_code's known deviation: no partial credit on a call-based problem (the bench checks each score)
    assert {("(a) trivial", "prime_code", "1"), ("(d) call10_fail1", "prime_code", "0")} <= rows
