"""Fixtures of the router tests: echo workers (tests/support/echo_worker.py), real GenRM servers and routers, all
real processes on 127.0.0.1, stopped when their test (or the session, for the shared echo workers) ends."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.local_stack import Child
from tests.conftest import start_router, start_script, start_server
from tests.support.router_calls import control

Router = Callable[..., Child]


class Procs:
    """Starts echo and misbehaving workers and routers for one test and stops them all afterwards."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.children: list[Child] = []

    def echo(self, name: str, models: str = "judge", delay_s: float = 0.0, recipes: str = "math,fapo") -> Child:
        child = start_script("support/echo_worker.py", "--models", models, "--recipes", recipes, log_dir=self.logs,
                             name=f"ops-{name}")
        self.children.append(child)
        if delay_s:
            control(child, delay_s=delay_s)
        return child

    def bad(self, mode: str) -> Child:
        """A misbehaving worker (tests/support/bad_worker.py) in ``mode``."""
        child = start_script("support/bad_worker.py", mode, log_dir=self.logs, name=f"ops-bad-{mode}")
        self.children.append(child)
        return child

    def router(self, workers: list[Child], *flags: str) -> Child:
        child = start_router([w.url for w in workers], self.logs, "--health-interval-s", "0.2", *flags)
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


@pytest.fixture()
def procs(logs: Path) -> Iterator[Procs]:
    p = Procs(logs)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def echo_pool(logs: Path) -> Iterator[list[Child]]:
    """Three echo workers serving model ``judge`` and recipes math, fapo, started in parallel once a session."""
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(start_script, "support/echo_worker.py", "--models", "judge", "--recipes", "math,fapo",
                               log_dir=logs, name=f"route-e{i}") for i in range(3)]
        children = [f.result() for f in futures]
    yield children
    for child in children:
        os.kill(child.process.pid, signal.SIGCONT)  # never leave a stopped process behind
        child.stop()


@pytest.fixture()
def echo3(echo_pool: list[Child]) -> Iterator[list[Child]]:
    """The echo workers, healthy and fast at the start and the end of every test."""
    def reset() -> None:
        for child in echo_pool:
            os.kill(child.process.pid, signal.SIGCONT)
            control(child, delay_s=0, status=200, ready=True)

    reset()
    yield echo_pool
    reset()


@pytest.fixture()
def router(logs: Path) -> Iterator[Router]:
    """``router(worker_urls, *flags)`` starts a router; all are stopped at the end of the test."""
    started: list[Child] = []

    def start(workers: list[str], *flags: str) -> Child:
        child = start_router(workers, logs, *flags)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


@pytest.fixture()
def disrm_worker(logs: Path) -> Iterator[Child]:
    child = start_script("support/echo_worker.py", "--models", "disrm", "--recipes", "disrm", log_dir=logs,
                         name="route-disrm")
    yield child
    child.stop()


@pytest.fixture()
def two_servers(tiny_model, logs):
    servers = [start_server(tiny_model, logs, name=f"fo{i}") for i in range(2)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture()
def bad_worker(logs, request):
    child = start_script("support/bad_worker.py", request.param, log_dir=logs, name=f"bad-{request.param}")
    yield child
    child.stop()
