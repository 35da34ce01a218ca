"""services/demo.py, the README's main job: `genrm demo` starts a stack, scores a reward batch, prints the table,
stops."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_scores_a_reward_batch_and_exits_cleanly(tmp_path):
    env = {**os.environ, "GENRM_HOME": str(tmp_path)}  # a fresh machine: the tiny model is written first
    result = subprocess.run([sys.executable, "-m", "services.cli", "demo"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "router ready: http://127.0.0.1:" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.rstrip().endswith(("True", "False"))]
    assert len(rows) == 16
    wrong = [r for r in rows if " -1.0 " in r]
    assert len(wrong) == 6 and all(r.split()[-2:] == ["False", "True"] for r in wrong)  # never judged
    assert "meaningless" in result.stdout or "noise" in result.stdout
    assert (tmp_path / "tiny-model" / "GENRM_TINY_MODEL.json").is_file()
