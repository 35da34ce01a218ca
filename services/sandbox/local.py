"""``--code-sandbox none``: sessions that run programs as plain subprocesses, for trusted code only.

Each run is a fresh process in its own process group and a private temporary directory, under rlimits
(address space, CPU, processes, file size), an output cap and a wall timeout; the whole group is killed at
the end of the run and the directory removed. There is no namespace isolation: the program sees the host's
files and network, and a child that calls ``setsid()`` leaves the group and can outlive the run. RLIMIT_NPROC
counts every process of the uid (and does nothing for root), so it is set to the uid's current count plus the
limit. C++ is compiled once per session with ``g++ -O2 -std=c++17``.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from services.sandbox.pool import SandboxStats
from services.sandbox.session import Language, Limits, RawRun, RunStatus, SandboxBusy, SandboxFailure

_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1"}
_SYNTAX_CHECK = "import sys; compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec', dont_inherit=True)"
_MEMORY_ERROR = re.compile(rb"^MemoryError\b|std::bad_alloc", re.MULTILINE)


class LocalSessions:
    """An unsandboxed SessionFactory: ``workers`` runs at a time (default: the usable cores); past
    ``queue_size`` waiting runs (None: no bound), ``SandboxBusy``."""

    def __init__(self, workers: int | None = None, queue_size: int | None = None, python: str = sys.executable,
                 cxx: str | None = None, on_run: Callable[[RawRun], None] | None = None):
        self.workers = workers or len(os.sched_getaffinity(0))
        self.queue_size = queue_size
        self.python = python
        self.cxx = cxx or shutil.which("g++")
        self.on_run = on_run
        self.stats = SandboxStats()  # the same counters as the sandbox's: sessions = runs holding a slot
        self._slots: asyncio.Semaphore | None = None

    @property
    def languages(self) -> tuple[Language, ...]:
        return ("python", "cpp") if self.cxx else ("python",)

    async def check(self) -> str:
        """Run a program once, as the sandbox's start-up check does; SandboxFailure when Python cannot run."""
        async with self.open("python", "print(sum(map(int, input().split())))") as session:
            if await session.prepare() is not None or (await session.run("40 2\n")).stdout != "42\n":
                raise SandboxFailure(f"{self.python} did not run the start-up check program")
        return f"unsandboxed ({self.python})"

    async def aclose(self) -> None:
        return None

    def open(self, language: Language, code: str, limits: Limits | None = None, *,
             files: dict[str, bytes] | None = None) -> LocalSession:
        """``files``: written into each run's working directory (``/run_code``'s ``files``)."""
        return LocalSession(self, language, code, limits or Limits(), files or {})

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        if self.queue_size is not None and self._slots.locked() and self.stats.queued >= self.queue_size:
            self.stats.busy += 1
            raise SandboxBusy()
        self.stats.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.stats.queued -= 1
        self.stats.sessions += 1
        try:
            yield
        finally:
            self.stats.sessions -= 1
            self._slots.release()


class LocalSession:
    """One program in a private directory: compiled or syntax-checked once, then one process per run."""

    def __init__(self, owner: LocalSessions, language: Language, code: str, limits: Limits,
                 files: dict[str, bytes] | None = None):
        self.owner, self.language, self.code, self.limits = owner, language, code, limits
        self.files = files or {}
        self.dir: Path | None = None
        self.compile_result: RawRun | None = None  # the compiler's run (C++), as the sandbox keeps it
        self._ready: tuple[list[str], int] | None = None  # argv and the NPROC limit, once prepared

    async def __aenter__(self) -> LocalSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def prepare(self) -> RawRun | None:
        self.dir = Path(tempfile.mkdtemp(prefix="genrm-code-"))
        nproc = _nproc_limit(self.limits.processes)
        if self.language == "python":
            source = self.dir / "main.py"
            source.write_text(self.code)
            check = [self.owner.python, "-c", _SYNTAX_CHECK, str(source)]
            argv = [self.owner.python, str(source)]
        else:
            if self.owner.cxx is None:
                raise SandboxFailure("C++ needs g++ on PATH; none found")
            source = self.dir / "main.cpp"
            source.write_text(self.code)
            check = [self.owner.cxx, "-O2", "-std=c++17", "-o", str(self.dir / "prog"), str(source)]
            argv = [str(self.dir / "prog")]
        compile_limits = self.limits.with_(wall_s=self.limits.compile_s, cpu_s=self.limits.compile_s)
        async with self.owner.slot():
            run = await _execute(check, b"", self.dir, compile_limits, _rlimits(compile_limits, nproc, memory=False))
        if self.language == "cpp":
            self.compile_result = run
        if run.status == "ok":
            self._ready = argv, nproc
            return None
        return RawRun("compile_error", run.return_code, run.stdout, run.stderr, run.execution_time)

    async def run(self, stdin: str) -> RawRun:
        return (await self.run_with_files(stdin))[0]

    async def run_with_files(self, stdin: str | bytes, *, fetch: tuple[str, ...] = ()) -> tuple[RawRun, dict]:
        """One run; with ``fetch``, the named files of its working directory afterwards (those that exist)."""
        if self._ready is None or self.dir is None:
            raise RuntimeError("run() before a successful prepare()")
        argv, nproc = self._ready
        data = stdin if isinstance(stdin, bytes) else stdin.encode()
        async with self.owner.slot():
            workdir = Path(tempfile.mkdtemp(dir=self.dir, prefix="run-"))
            try:
                for name, content in self.files.items():
                    target = workdir / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                raw = await _execute(argv, data, workdir, self.limits, _rlimits(self.limits, nproc, True))
                self.owner.stats.executions[raw.status] += 1
                if self.owner.on_run is not None:
                    self.owner.on_run(raw)
                fetched = {name: (workdir / name).read_bytes() for name in fetch if (workdir / name).is_file()}
                return raw, fetched
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    async def aclose(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _nproc_limit(processes: int) -> int:
    """Linux counts RLIMIT_NPROC over the whole uid: allow what it runs now plus ``processes``."""
    if os.geteuid() == 0:
        return processes  # not enforced for root
    uid, tasks = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    tasks += len(os.listdir(f"/proc/{pid}/task"))
    return tasks + processes


def _rlimits(limits: Limits, nproc: int, memory: bool) -> Callable[[], None]:
    """The child's limits, applied between fork and exec (no Python objects allocated there but ints)."""
    cpu = max(1, math.ceil(limits.cpu_limit_s))
    address_space = limits.memory_mb * 1024 * 1024
    settings = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_FSIZE, (limits.files_bytes,) * 2),
                (resource.RLIMIT_NPROC, (nproc, nproc)), (resource.RLIMIT_CORE, (0, 0))]
    if memory:
        settings.append((resource.RLIMIT_AS, (address_space, address_space)))

    def apply() -> None:
        for which, values in settings:
            resource.setrlimit(which, values)

    return apply


async def _execute(argv: list[str], stdin: bytes, cwd: Path, limits: Limits, preexec: Callable[[], None]) -> RawRun:
    """Run once: feed stdin, keep both pipes up to the shared output cap, kill the group at the end.

    The end is the process's exit (not its pipes' end: a child may hold them), the wall time, or the cap."""
    env = {**_ENV, "HOME": str(cwd), "TMPDIR": str(cwd)}
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, run = await loop.subprocess_exec(
            lambda: _Run(limits.output_bytes), *argv, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env,
            start_new_session=True, preexec_fn=preexec)
    except OSError as exc:
        raise SandboxFailure(f"cannot start {argv[0]}: {exc}") from exc
    pgid = transport.get_pid()
    run.on_overflow = lambda: _kill_group(pgid)
    feed = transport.get_pipe_transport(0)
    if feed is not None:
        feed.write(stdin)  # buffered by the transport; dropped if the program never reads it
        feed.write_eof()
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(run.exited), limits.wall_s)
    except asyncio.TimeoutError:
        timed_out = True
    finally:
        _kill_group(pgid)
        elapsed = time.monotonic() - started
        try:
            await asyncio.shield(run.exited)
            # What the program wrote before it ended may still be in the pipes; only a child that left the
            # group (setsid) could hold them open past the kill.
            await asyncio.wait_for(asyncio.shield(run.drained), timeout=1.0)
        except asyncio.TimeoutError:
            pass
        finally:
            transport.close()
    code = transport.get_returncode()
    return RawRun(_classify(code, timed_out, run, elapsed, limits), code, run.text(1), run.text(2), elapsed)


def _classify(code: int | None, timed_out: bool, run: _Run, elapsed: float, limits: Limits) -> RunStatus:
    if run.overflowed:
        return "output_limit"
    if timed_out or code == -signal.SIGXCPU or (code == -signal.SIGKILL and elapsed >= limits.cpu_limit_s):
        return "timeout"
    if code == 0:
        return "ok"
    if _MEMORY_ERROR.search(bytes(run.output[2][-4096:])):
        return "memory_limit"
    return "runtime_error"


class _Run(asyncio.SubprocessProtocol):
    """One process's stdout and stderr, cut together at ``cap`` bytes (past it ``on_overflow``), and its end."""

    def __init__(self, cap: int):
        loop = asyncio.get_running_loop()
        self.cap, self.used, self.overflowed = cap, 0, False
        self.output = {1: bytearray(), 2: bytearray()}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self.on_overflow: Callable[[], None] = lambda: None
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self.overflowed or fd not in self.output:
            return
        room = self.cap - self.used
        self.output[fd] += data[:room]
        self.used += min(room, len(data))
        if len(data) > room:
            self.overflowed = True
            self.on_overflow()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def text(self, fd: int) -> str:
        return self.output[fd].decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
