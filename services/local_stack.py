"""``genrm up``: N GenRM servers and a router as child processes on loopback.

Children die with the parent (``PR_SET_PDEATHSIG`` on Linux) and are stopped in order on exit, so
neither Ctrl-C, SIGTERM, nor a crashed child leaves a process behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

log = logging.getLogger("genrm.up")

READY_LINE = "router ready: {url} ({servers}{sandboxes}; started in {seconds:.1f}s)"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_model_dir() -> Path:
    """Where ``up`` keeps the embedded tiny model (``GENRM_HOME`` or ``~/.cache/genrm-platform``)."""
    home = Path(os.environ.get("GENRM_HOME") or Path.home() / ".cache" / "genrm-platform")
    return home / "tiny-model"


def ensure_tiny_model(path: Path) -> Path:
    from services.tiny_model import is_tiny_model, write_tiny_model

    if not is_tiny_model(path):
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        write_tiny_model(tmp)
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # another process may have won the race: keep theirs
            tmp.rename(path)
    return path


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout_s: float) -> None:
        try:
            self.process.wait(max(0.1, timeout_s))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", self.name)
            self.process.kill()
            self.process.wait()
        if self.log_file:
            self.log_file.close()

    def stop(self, timeout_s: float = 15.0) -> None:
        self.terminate()
        self.wait_or_kill(timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class StackError(RuntimeError):
    pass


def spawn(name: str, url: str, args: list[str], *, config_file: str | Path | None = None,
          log_dir: Path | None = None, env: dict[str, str] | None = None) -> Child:
    """Start ``python -m services.cli ARGS`` as a child that dies with this process."""
    cmd = [sys.executable, "-m", "services.cli", *args]
    if config_file:
        cmd += ["--config", str(config_file)]
    log_path = log_file = None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed by Child.stop
    # Own session: a terminal's Ctrl-C reaches only the parent, which then stops children in order.
    process = subprocess.Popen(
        cmd, stdout=log_file, stderr=subprocess.STDOUT if log_file else None, env=env,
        start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    log.debug("started %s (pid %d): %s", name, process.pid, url)
    return Child(name, url, process, log_path, log_file)


def wait_ready(child: Child, deadline: float) -> None:
    """Poll ``/ready`` until 200; fail fast (with the log tail) if the child exits first."""
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            tail = f"; last log lines:\n{child.log_tail()}" if child.log_path else ""
            raise StackError(f"{child.name} exited with code {child.process.returncode} before it was ready{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(child.url + "/ready", timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise StackError(f"{child.name} at {child.url} not ready in time")


class LocalStack:
    """Start/stop the stack; use as a context manager. ``log_dir=None`` lets children share stderr."""

    def __init__(
        self,
        replicas: int = 2,
        model: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        router_port: int = 0,
        config_file: str | Path | None = None,
        server_args: list[str] | None = None,
        router_args: list[str] | None = None,
        ready_timeout_s: float = 180.0,
        log_dir: str | Path | None = None,
        child_log_level: str | None = None,
        sandbox_replicas: int = 0,
        sandbox_args: list[str] | None = None,
        tiny_default: bool = True,
    ):
        """``child_log_level``: passed to every child as ``--log-level`` (``genrm up`` keeps them to warnings, so
        the terminal shows the router's URL, not each server's). ``sandbox_replicas``: CPU-only sandbox servers
        (``serve --engine none --recipe code``) beside the judges, behind the same router."""
        self.replicas, self.host, self.sandbox_replicas = replicas, host, sandbox_replicas
        self.sandbox_args = sandbox_args or []
        self.tiny_default = tiny_default  # no model given: the embedded tiny one (False: the servers need none)
        self.model = str(model) if model else None
        self.router_port = router_port or free_port(host)
        self.config_file = config_file
        self.server_args, self.router_args = server_args or [], router_args or []
        self.ready_timeout_s = ready_timeout_s
        self.log_dir = Path(log_dir) if log_dir else None
        self.child_args = ["--log-level", child_log_level] if child_log_level else []
        self.servers: list[Child] = []
        self.router: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.router_port}"

    @property
    def children(self) -> list[Child]:
        return [*self.servers, *([self.router] if self.router else [])]

    def start(self) -> str:
        if self.model is None and self.replicas and self.tiny_default:
            self.model = str(ensure_tiny_model(default_model_dir()))
        try:
            for i in range(self.replicas):
                port = free_port(self.host)
                # Replicas split the CPU cores (later --torch-threads in server_args still wins).
                threads = str(max(1, (os.cpu_count() or 1) // self.replicas))
                model = ["--model", self.model] if self.model else []
                args = ["serve", "--host", self.host, "--port", str(port), *model,
                        "--torch-threads", threads, *self.child_args, *self.server_args]
                self.servers.append(self._spawn(f"server-{i}", f"http://{self.host}:{port}", args))
            for i in range(self.sandbox_replicas):
                port = free_port(self.host)
                args = ["serve", "--host", self.host, "--port", str(port), "--engine", "none", "--recipe", "code",
                        *self.child_args, *self.sandbox_args]
                self.servers.append(self._spawn(f"sandbox-{i}", f"http://{self.host}:{port}", args))
            deadline = time.monotonic() + self.ready_timeout_s
            for server in self.servers:
                wait_ready(server, deadline)
            workers = [s.url for s in self.servers]
            args = ["route", "--host", self.host, "--port", str(self.router_port), "--workers", *workers,
                    *self.child_args, *self.router_args]
            self.router = self._spawn("router", self.url, args)
            wait_ready(self.router, deadline)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _spawn(self, name: str, url: str, args: list[str]) -> Child:
        quiet = self.child_args[1:] in (["warning"], ["error"])  # no model-loading progress bars either
        env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"} if quiet else None
        return spawn(name, url, args, config_file=self.config_file, log_dir=self.log_dir, env=env)

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the router first (no new traffic), then the servers; SIGKILL what lingers."""
        children = list(reversed(self.children))
        for child in children:
            child.terminate()
        deadline = time.monotonic() + timeout_s
        for child in children:
            child.wait_or_kill(deadline - time.monotonic())
        self.servers, self.router = [], None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Interrupted(BaseException):
    """Raised from the signal handler while starting (a BaseException: nothing swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def run_forever(stack: LocalStack) -> int:
    """Block until SIGINT/SIGTERM or a child's death; always stop the stack. Returns the exit status: 130 after
    Ctrl-C (SIGINT), 0 after SIGTERM, 1 when a child died."""
    stopping = {"signal": 0, "starting": True}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signum
        if stopping["starting"]:  # interrupt the (possibly minutes-long) start; start() cleans up
            raise _Interrupted(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    try:
        try:
            stack.start()
        except _Interrupted as exc:
            log.info("received %s while starting; stopping", signal.Signals(exc.signum).name)
            return _status(exc.signum)
        stopping["starting"] = False
        sandboxes = f" + {stack.sandbox_replicas} sandbox" if stack.sandbox_replicas else ""
        servers = f"{stack.replicas} server{'' if stack.replicas == 1 else 's'}"
        print(READY_LINE.format(url=stack.url, servers=servers, sandboxes=sandboxes,
                                seconds=time.monotonic() - t0), flush=True)
        while not stopping["signal"]:
            dead = stack.dead_child()
            if dead is not None:
                log.error("%s exited with code %s; stopping the stack", dead.name, dead.process.returncode)
                return 1
            time.sleep(0.2)
        log.info("received %s; stopping", signal.Signals(stopping["signal"]).name)
        return _status(stopping["signal"])
    finally:
        stack.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _status(signum: int) -> int:
    return 128 + signum if signum == signal.SIGINT else 0
