"""`genrm score` through the real process and the session's stack: nothing stops at a bad row, every row's
result or error (with its row number) is written, a summary counts by error, and the exit status says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.samples import math_sample


def _math(i: int) -> dict:
    return {"id": i, "recipe": "math", "solution": f"\\boxed{{{i}}}", "ground_truth": str(i)}


def _score(src: Path, out: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", "score", str(src), "-o", str(out), "--url", url,
                           "--no-progress", *extra], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("mode", ["batch", "single"])
def test_bad_rows_get_their_error_and_the_rest_are_scored(mode: str, stack, tmp_path: Path) -> None:
    rows = [_math(0), {"id": 1, "recipe": "math", "solution": "x"}, _math(2),
            {"id": 3, "recipe": "nope", "solution": "x", "ground_truth": "1"}, _math(4)]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = _score(src, out, stack.url, "--mode", mode)
    assert done.returncode == 1, done.stderr  # some row failed
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["id"] for w in written] == [0, 1, 2, 3, 4]
    assert [w["reward"]["score"] for w in written if "error" not in w] == [1.0, 1.0, 1.0]
    assert written[1]["reward"] is None and written[1]["error"]["row"] == 2
    assert written[1]["error"]["status"] == 400 and "ground_truth" in written[1]["error"]["message"]
    assert written[3]["error"]["row"] == 4 and written[3]["error"]["status"] == 404
    summary = done.stderr.strip().splitlines()[-1]
    assert "3 samples scored, 2 failed (of 5 rows)" in summary
    assert "1 × 400" in summary and "1 × 404" in summary


def test_every_row_failing_exits_non_zero_and_rule_only_flags(stack, tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"recipe": "nope", "solution": f"\\boxed{{{i}}}", "ground_truth": str(i)})
                           + "\n" for i in range(300)))
    done = _score(src, out, stack.url, "--on-failure", "rule_only")
    assert done.returncode == 1
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 300
    assert all(w["reward"]["reward_source"] == "fallback" and w["reward"]["score"] == 1.0 for w in written)
    assert [w["error"]["row"] for w in written] == list(range(1, 301))
    assert "0 samples scored, 300 failed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # a summary, not a line per failure


def test_an_unreadable_row_is_named_and_written_and_the_rest_scored(stack, tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps(_math(1)) + "\nnot json\n[1, 2]\n" + json.dumps(_math(2)) + "\n")
    done = _score(src, out, stack.url)
    assert done.returncode == 2
    assert f"{src}:2: not JSON" in done.stderr and f"{src}:3: a sample must be a JSON object" in done.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["reward"]["score"] if w["reward"] else None for w in written] == [1.0, None, None, 1.0]
    assert [w.get("error", {}).get("row") for w in written] == [None, 2, 3, None]


def test_a_router_that_is_down_fails_every_row_with_one_reason(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps(_math(1)) + "\n")
    done = _score(src, out, "http://127.0.0.1:1", "--timeout-s", "2")
    assert done.returncode == 1
    assert "cannot connect to http://127.0.0.1:1 (connection refused)" in done.stderr


def test_a_url_without_a_scheme_is_refused_at_once(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(_math(1)) + "\n")
    done = _score(src, tmp_path / "out.jsonl", "127.0.0.1:39999")
    assert done.returncode == 2 and "must be an http:// or https:// URL" in done.stderr


def test_genrm_score_jsonl_in_jsonl_out(stack, tmp_path):
    import json
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({**math_sample(i, right=i % 2 == 0), "id": f"s{i}"}) + "\n"
                           for i in range(12)))
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-m", "services.cli", "score", str(src), "-o", str(out), "--url",
                           stack.url, "--recipe", "math", "--batch-size", "5"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(12)]
    assert [r["reward"]["score"] for r in rows] == [1.0 if i % 2 == 0 else -1.0 for i in range(12)]
    assert "12 samples scored" in done.stderr
    src.write_text('{"solution": "x"}\nnot json\n')
    bad = subprocess.run([sys.executable, "-m", "trainer_client.score_cli", str(src), "--url", stack.url],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and f"{src}:2: not JSON" in bad.stderr
