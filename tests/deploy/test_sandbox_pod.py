"""The Helm chart's sandbox pod, rebuilt with real kernel namespaces (tests/support/pod_namespaces.py): root of
its own user namespace (hostUsers: false), the capabilities, uid and no_new_privs of the rendered
securityContext, a read-only root, and /proc unmasked (procMount: Unmasked) or masked as runtimes do by default.
The real sandbox server starts in it and runs programs, or stops with bubblewrap's reason; nothing outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.local_stack import free_port
from tests.support import pod_namespaces

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (pip install -e '.[deploy-test]')")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "genrm-platform"
HELPER = REPO / "tests" / "support" / "pod_namespaces.py"
PROGRAMS = {
    "python": "import os\nprint(os.getuid(), sorted(p for p in os.listdir('/proc') if p.isdigit()))",
    "cpp": "#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a*b<<std::endl;}",
}

why_not = pod_namespaces.available()
if why_not is None and not any(os.access(os.path.join(p, "bwrap"), os.X_OK) for p in os.get_exec_path()):
    why_not = "bubblewrap is not installed (apt-get install bubblewrap)"
pytestmark = pytest.mark.skipif(why_not is not None, reason=f"pod emulation: {why_not}")


def _rendered_sandbox_pod(**values: Any) -> dict[str, Any]:
    import yaml

    with helm.Chart.load(CHART) as chart:
        out = chart.render({"sandbox": {"enabled": True, **values}}, name="rl", namespace="ml")
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-sandbox"):
                return doc["spec"]["template"]["spec"]
    raise AssertionError("no sandbox Deployment rendered")


def _spec(pod: dict[str, Any]) -> dict[str, Any]:
    """What pod_namespaces.py applies, read from the rendered pod."""
    assert pod["hostUsers"] is False  # the emulation always makes a user namespace: the chart must ask for one
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    return {"run_as_user": pod["securityContext"].get("runAsUser", 0),
            "capabilities": ctx["capabilities"].get("add", []) if "ALL" in ctx["capabilities"]["drop"] else None,
            "no_new_privs": ctx["allowPrivilegeEscalation"] is False,
            "masked_proc": ctx.get("procMount", "Default") != "Unmasked",
            "read_only_root": bool(ctx.get("readOnlyRootFilesystem"))}


def _start(spec: dict[str, Any], port: int, log: Path) -> subprocess.Popen:
    server = [sys.executable, "-m", "services.cli", "serve", "--recipe", "code", "--code-sandbox", "bwrap",
              "--sandbox-workers", "2", "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": "/tmp"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, str(HELPER), json.dumps(spec), "--", *server], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the launcher, which hands it to the server (the pod's init); SIGKILL to all of them past 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _pod_processes() -> list[str]:
    """Host processes running as a mapped id of the emulated pod (the sandboxes' 61000 + slot among them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
            if pod_namespaces.HOST_ID_BASE < uid <= pod_namespaces.HOST_ID_BASE + 65535:
                found.append(f"{entry.name} uid={uid}")
    return found


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the sandbox server stopped ({proc.returncode}):\n{log.read_text()[-2000:]}"
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready within 60 s:\n{log.read_text()[-2000:]}")


def test_the_charts_sandbox_pod_runs_programs(tmp_path: Path) -> None:
    spec = _spec(_rendered_sandbox_pod())
    assert spec == {"run_as_user": 0, "capabilities": ["SETUID", "SETGID", "KILL"], "no_new_privs": True,
                    "masked_proc": False, "read_only_root": True}
    port, log = free_port(), tmp_path / "sandbox.log"
    proc = _start(spec, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log)
        with httpx.Client(base_url=url, timeout=60) as client:
            ran = client.post("/run_code", json={"code": PROGRAMS["python"], "language": "python"}).json()
            assert ran["status"] == "Success", ran
            uid, pids = ran["run_result"]["stdout"].split(" ", 1)
            # a worker slot's own uid inside the pod (host id 200000 + 61000 + slot), and a /proc of its own
            # pid namespace: bwrap's init and the program, nothing of the pod's
            assert 61000 <= int(uid) < 61002 and len(json.loads(pids.replace("'", '"'))) <= 3, ran
            assert any(p for p in _pod_processes()), "the sandboxes run as mapped ids of the pod"
            compiled = client.post("/run_code", json={"code": PROGRAMS["cpp"], "language": "cpp",
                                                      "stdin": "6 7"}).json()
            assert compiled["status"] == "Success" and compiled["run_result"]["stdout"] == "42\n", compiled
            reward = client.post("/v1/reward", json={
                "recipe": "code", "solution": "```python\nprint(sum(map(int, input().split())))\n```",
                "ground_truth": json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})}).json()
            assert reward["score"] == 1.0 and reward["tests_passed"] == 2, reward
    finally:
        _stop(proc)
    deadline = time.monotonic() + 10
    while _pod_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pod_processes(), "a process of the pod outlived it"


def test_masked_proc_stops_the_server_with_bubblewraps_reason(tmp_path: Path) -> None:
    """procMount Default (the runtime's masked /proc): the server refuses to start and says why, in one line."""
    spec = {**_spec(_rendered_sandbox_pod()), "masked_proc": True}
    log = tmp_path / "sandbox.log"
    proc = _start(spec, free_port(), log)
    try:
        assert proc.wait(60) == 2
    finally:
        _stop(proc)
    said = log.read_text().strip().splitlines()
    assert len(said) == 1 and "code_sandbox" in said[0] and "Can't mount proc" in said[0], said
