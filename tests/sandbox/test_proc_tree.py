"""bench/proc_tree.py counts the CPU of short-lived descendants (reaped ones included) and leaves out
excluded subtrees: the per-core figures of bench/sandbox_bench.py rest on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from proc_tree import listener_pids, tree_cpu_seconds

# A child that starts a grandchild burning ~0.4 s of CPU, then waits for it.
BURN = ("import subprocess, sys\nsubprocess.run([sys.executable, '-c', "
        "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.4: pass'])\n")


def test_reaped_descendants_are_counted_once() -> None:
    me = os.getpid()
    before = tree_cpu_seconds([me])
    subprocess.run([sys.executable, "-c", BURN], check=True)
    spent = tree_cpu_seconds([me]) - before
    assert 0.4 <= spent < 1.5, spent  # the grandchild's 0.4 s, plus two interpreter start-ups


def test_an_excluded_live_subtree_is_left_out() -> None:
    me = os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.5: pass\ntime.sleep(30)"])
    try:
        while tree_cpu_seconds([child.pid]) < 0.5:
            pass
        with_child = tree_cpu_seconds([me])
        without = tree_cpu_seconds([me], exclude=[child.pid])
        assert with_child - without >= 0.45
        assert tree_cpu_seconds([child.pid], exclude=[child.pid]) == 0.0
    finally:
        child.kill()
        child.wait()


def test_listener_pids_finds_the_process_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert os.getpid() not in listener_pids(port)  # bound, not yet listening
        s.listen()
        assert os.getpid() in listener_pids(port)
    assert os.getpid() not in listener_pids(port)
