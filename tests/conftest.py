"""Shared fixtures: a tiny model written once per session, real server/router processes on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.local_stack import Child, LocalStack, free_port, spawn, wait_ready
from services.tiny_model import write_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing may be downloaded


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the whole session (Ray allows one per process; it takes ~20 s to start)."""
    pytest.importorskip("ray")
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Logical CPUs (accounting only): room for the Serve apps and the verl reward actors side by side.
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def _start(name: str, args: list[str], log_dir: Path, port: int, timeout_s: float) -> Child:
    """Run ``genrm ARGS --port PORT`` as a real process and return once its /ready answers 200."""
    child = spawn(f"{name}-{port}", f"http://127.0.0.1:{port}", [*args, "--port", str(port)], log_dir=log_dir)
    try:
        wait_ready(child, time.monotonic() + timeout_s)
    except BaseException:
        child.stop()
        raise
    return child


def wait_for(cond: Callable[[], Any], what: str, timeout_s: float = 10.0, every_s: float = 0.03) -> Any:
    """Poll ``cond`` until it returns something truthy (returned); fail naming ``what`` past the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(every_s)


def start_script(script: str, *args: str, log_dir: Path, name: str) -> Child:
    """Run a helper script of tests/ (``script PORT ARGS``; a path below tests/, e.g. ``support/x.py``) as a real
    process; return once /ready answers."""
    port = free_port()
    log_path = log_dir / f"{name}-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by Child.stop
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / script), str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT)
    child = Child(name, f"http://127.0.0.1:{port}", proc, log_path, log)
    try:
        wait_ready(child, time.monotonic() + 60)
    except BaseException:
        child.stop()
        raise
    return child


def start_server(model: Path | str, log_dir: Path, *extra: str, name: str = "server", port: int = 0) -> Child:
    args = ["serve", "--model", str(model), "--log-level", "warning", *extra]
    return _start(name, args, log_dir, port or free_port(), timeout_s=120)


def start_router(workers: list[str], log_dir: Path, *extra: str) -> Child:
    args = ["route", "--workers", *workers, "--log-level", "warning", *extra]
    return _start("router", args, log_dir, free_port(), timeout_s=60)


@pytest.fixture(scope="session")
def server(tiny_model: Path, logs: Path) -> Iterator[Child]:
    """One GenRM server; a 64 KiB body limit (the 413 path is cheap to reach), short judge answers."""
    child = start_server(
        tiny_model, logs, "--max-wait-ms", "20", "--max-body-bytes", "65536", "--judge-max-tokens", "64"
    )
    yield child
    child.stop()


@pytest.fixture(scope="session")
def judge(logs: Path) -> Iterator[Child]:
    """The scripted OpenAI-compatible judge (tests/support/scripted_judge.py): replies chosen by the prompt."""
    child = start_script("support/scripted_judge.py", log_dir=logs, name="scripted-judge")
    yield child
    child.stop()


@pytest.fixture(scope="session")
def fapo_server(judge: Child, logs: Path) -> Iterator[Child]:
    """A FAPO server whose judge is the scripted one (openai engine), 1 s judge timeout."""
    child = start_server(judge.url, logs, "--engine", "openai", "--upstream-url", judge.url + "/v1",
                         "--upstream-timeout-s", "1", "--recipe", "fapo", name="fapo")
    yield child
    child.stop()


@pytest.fixture(scope="session")
def stack(tiny_model: Path, logs: Path) -> Iterator[LocalStack]:
    """Router in front of two GenRM servers, as `genrm up` starts them."""
    with LocalStack(2, tiny_model, log_dir=logs / "stack") as s:
        yield s


@pytest.fixture(scope="session")
def sandbox_server(logs: Path) -> Iterator[Child]:
    """A CPU-only sandbox server as the images run it (`genrm serve --recipe code`), two sandbox workers."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap; scripts/setup.sh does as root)")
    child = _start("sandbox", ["serve", "--recipe", "code", "--sandbox-workers", "2", "--log-level", "warning"],
                   logs, free_port(), timeout_s=60)
    yield child
    child.stop()
