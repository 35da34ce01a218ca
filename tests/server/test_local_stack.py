"""services/local_stack.py: `genrm up` starts servers + router, prints its ready line, and leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.local_stack import free_port


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _spawn_up(tiny_model: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--replicas", "2", "--model", str(tiny_model),
         "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def _start_up(tiny_model: Path) -> tuple[subprocess.Popen, str]:
    proc = _spawn_up(tiny_model)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if match := re.fullmatch(r"router ready: (http://127\.0\.0\.1:\d+) \(2 servers; started in [\d.]+s\)\n", line):
            return proc, match.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("genrm up never printed its ready line")


def _wait_gone(pids: set[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "processes left behind"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_then_stops_cleanly(tiny_model, sig):
    proc, url = _start_up(tiny_model)
    try:
        children = _descendants(proc.pid)
        assert len(children) >= 3  # two servers and the router
        # Replicas split the cores: two default-sized OpenMP pools on shared cores stalled steps 200x.
        threads = str(max(1, (os.cpu_count() or 1) // 2))
        servers = [Path(f"/proc/{p}/cmdline").read_text().split("\x00") for p in children]
        servers = [argv for argv in servers if "serve" in argv]
        assert len(servers) == 2
        assert all(argv[argv.index("--torch-threads") + 1] == threads for argv in servers)
        resp = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                              "max_tokens": 3}, timeout=30)
        assert resp.status_code == 200
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == (130 if sig == signal.SIGINT else 0)  # Ctrl-C: 128 + SIGINT
        _wait_gone(children, timeout_s=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_stops_everything_when_a_child_dies(tiny_model):
    proc, url = _start_up(tiny_model)
    try:
        children = _descendants(proc.pid)
        workers = httpx.get(url + "/workers", timeout=10).json()["workers"]
        port = workers[0]["url"].rsplit(":", 1)[1]
        victim = next(p for p in children if f"--port\x00{port}\x00" in Path(f"/proc/{p}/cmdline").read_text())
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
        _wait_gone(children, timeout_s=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_during_start_up_stops_at_once(tiny_model):
    proc = _spawn_up(tiny_model)
    try:
        deadline = time.monotonic() + 30
        while not _descendants(proc.pid) and time.monotonic() < deadline:  # servers spawned, still loading
            time.sleep(0.05)
        children = _descendants(proc.pid)
        assert children, "no child was started"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
        assert "router ready" not in proc.stdout.read()
        _wait_gone(children, timeout_s=10)
    finally:
        if proc.poll() is None:
            proc.kill()
