"""Run ByteDance's SandboxFusion ``/run_code`` service locally, as the peer of our sandbox in the code benchmarks.

Given its source tree (``--sandboxfusion-src DIR``, fetched separately: nothing of it is in this repo), this
creates a venv outside the repo, installs SandboxFusion's Python dependencies at the versions its
``poetry.lock`` pins, and starts ``uvicorn sandbox.server.server:app`` on 127.0.0.1 in its lightest isolation
mode (its ``local`` config: ``isolation: none``, no process cleanup, no bash restore), then waits for
``/v1/ping``. Two gaps between its Docker image and a plain host are bridged without touching its code:

- it finds the interpreter that runs Python programs through conda (``<conda root>/bin/activate
  sandbox-runtime && which python``, the root being the nearest parent of ``sys.executable`` that holds
  ``condabin/``): an empty ``condabin/`` in the venv makes the venv that root, so its ``activate`` script
  puts the venv's own ``python`` (the same CPython 3.11) first on PATH;
- it runs each program as ``bash -c "python FILE"`` with stdio on socketpairs (uvloop), which Debian's bash
  takes for a remote shell and so sources ``~/.bashrc`` first (here: ``pyenv init``, ~150 ms of CPU and
  pyenv's interpreter instead of the venv's): ``HOME`` is an empty directory in the venv, as in a clean image;
- its app mounts the built docs (``docs/build``, made by npm in the image) and fails to start without the
  directory: an empty one is created in the source tree.

    python bench/peers/sandboxfusion.py --sandboxfusion-src /work/peers/SandboxFusion install
    python bench/peers/sandboxfusion.py --sandboxfusion-src /work/peers/SandboxFusion serve --port 8080
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import tomllib

DEFAULT_VENV = Path("/work/peers/sf-venv")
# The runtime dependencies of SandboxFusion's pyproject.toml ([tool.poetry.dependencies]); versions from its lock.
DIRECT_DEPS = ["pydantic", "fastapi", "uvicorn[standard]", "structlog", "psutil", "aiofiles", "aiohttp", "tenacity",
               "databases[aiomysql,aiosqlite]", "transformers", "pyyaml"]


def find_python311() -> str:
    """SandboxFusion requires Python ^3.11."""
    for name in ("python3.11", "python3.12", "python3"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", "import sys; assert sys.version_info >= (3, 11)"]).returncode == 0:
            return path
    raise SystemExit("SandboxFusion needs Python >= 3.11 on PATH")


def lock_constraints(src: Path) -> list[str]:
    """``name==version`` for every package in SandboxFusion's poetry.lock (pip constraints: applied if installed)."""
    with open(src / "poetry.lock", "rb") as f:
        lock = tomllib.load(f)
    return [f"{p['name']}=={p['version']}" for p in lock["package"]]


def install(src: Path, venv: Path) -> None:
    """Create the venv and install SandboxFusion's dependencies into it (idempotent)."""
    if not (src / "sandbox" / "server" / "server.py").is_file():
        raise SystemExit(f"{src} is not a SandboxFusion source tree (no sandbox/server/server.py)")
    if not (venv / "bin" / "python").exists():
        subprocess.run([find_python311(), "-m", "venv", str(venv)], check=True)
    constraints = venv / "sandboxfusion-lock-constraints.txt"
    constraints.write_text("\n".join(lock_constraints(src)) + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-c", str(constraints), *DIRECT_DEPS], check=True)
    (venv / "condabin").mkdir(exist_ok=True)  # see the module docstring: the venv stands in for the conda root
    (src / "docs" / "build").mkdir(parents=True, exist_ok=True)


def ping(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/ping", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


class SandboxFusion:
    """The service as a context manager: started on enter (after ``install`` if needed), stopped on exit.

    ``pid`` is uvicorn's process: each program it runs is a child of it (bash, then the interpreter), so the
    CPU it spends is that process's own time plus its reaped children's (``/proc/PID/stat`` cutime/cstime).
    """

    def __init__(self, src: Path, venv: Path = DEFAULT_VENV, port: int = 8080, log: Path | None = None,
                 cpus: str | None = None):
        self.src, self.venv, self.port, self.log, self.cpus = Path(src), Path(venv), port, log, cpus
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    @property
    def run_code_url(self) -> str:
        return f"{self.url}/run_code"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready_timeout_s: float = 120.0) -> None:
        if not (self.venv / "condabin").is_dir() or not (self.src / "docs" / "build").is_dir():
            install(self.src, self.venv)
        if ping(self.url):
            raise RuntimeError(f"something already answers on {self.url}")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        home = self.venv / "home"
        home.mkdir(exist_ok=True)
        path = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(SANDBOX_CONFIG="local", HOME=str(home), PATH=path)
        cmd = [str(self.venv / "bin" / "python"), "-m", "uvicorn", "sandbox.server.server:app",
               "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if self.cpus:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 (owned by the process)
        self.proc = subprocess.Popen(cmd, cwd=self.src, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + ready_timeout_s
        while not ping(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"SandboxFusion exited with {self.proc.returncode} (log: {self.log})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SandboxFusion not ready on {self.url} after {ready_timeout_s:.0f}s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: uvicorn and whatever it still runs
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> SandboxFusion:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sandboxfusion-src", type=Path, required=True, help="SandboxFusion's source tree")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="its venv (outside any repo)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="create the venv and install the dependencies")
    serve = sub.add_parser("serve", help="start the service, wait until ready, run until interrupted")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log", type=Path, default=None)
    a = p.parse_args(argv)
    if a.cmd == "install":
        install(a.sandboxfusion_src, a.venv)
        print(f"installed into {a.venv}")
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a TERM stops the service as Ctrl-C does
    with SandboxFusion(a.sandboxfusion_src, a.venv, a.port, a.log) as sf:
        print(f"SandboxFusion ready: {sf.run_code_url} (pid {sf.pid}); Ctrl-C or SIGTERM stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            sf.proc.wait()  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main())
