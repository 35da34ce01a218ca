"""trainer_client/score_cli.py: ``genrm score`` reads samples from JSONL, scores them through a real stack and
writes JSONL in input order; a bad line is named by file and line number."""

from __future__ import annotations

from tests.support.samples import math_sample


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
