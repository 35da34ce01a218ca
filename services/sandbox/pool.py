"""``Sandbox``: the bubblewrap ``SessionFactory``, a pool of worker slots with a bounded queue.

A session (one sample: one program, many tests) holds one worker slot from ``prepare()`` to ``aclose()`` and
runs its tests in one sandbox, one process per test. A slot is one host uid when the server runs as root
(61000 + slot: RLIMIT_NPROC is not enforced for uid 0, and a fork bomb in one slot cannot starve another),
and keeps its next sandbox started ahead (``prewarm``), so a session starts on a ready runner.
Past ``workers`` busy slots, up to ``queue_size`` sessions wait; past that ``prepare()`` raises
``SandboxBusy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from services.sandbox.bwrap import BwrapConfig, interpreter_binds, runner_bytecode
from services.sandbox.executor import RunnerGone, RunnerProcess, to_bytes
from services.sandbox.session import Language, Limits, RawRun, SandboxBusy, SandboxFailure

BASE_UID = 61000


class UnsupportedLanguage(ValueError):
    """The sandbox cannot run this language here (C++ without a compiler, or a language it does not know)."""


@dataclass
class SandboxStats:
    """Counters for the server's metrics; read them, never write them."""

    executions: Counter = field(default_factory=Counter)  # runs by RawRun.status (compile errors included)
    run_seconds: float = 0.0  # wall seconds of all runs
    failures: int = 0  # SandboxFailure raised
    busy: int = 0  # SandboxBusy raised
    queued: int = 0  # sessions waiting for a worker now
    sessions: int = 0  # sessions holding a worker now
    in_flight: int = 0  # tests running now
    sandboxes_started: int = 0
    warm_starts: int = 0  # sessions that found their sandbox already started


@dataclass(frozen=True)
class SandboxInfo:
    """What ``check()`` found: the sandbox works, with these."""

    bwrap: str
    bwrap_version: str
    python: str
    python_version: str
    languages: tuple[Language, ...]
    workers: int
    run_as_uids: str  # "61000-61007" when root, else "the server's uid"


@dataclass
class _Slot:
    index: int
    uid: int | None
    warm: asyncio.Task | None = None


class Sandbox:
    """Runs untrusted programs in bubblewrap sandboxes; implements ``SessionFactory``."""

    def __init__(self, workers: int | None = None, queue_size: int | None = None, *,
                 limits: Limits | None = None, config: BwrapConfig | None = None, prewarm: bool = True,
                 retry_after_s: float = 1.0, base_uid: int = BASE_UID,
                 on_run: Callable[[RawRun], None] | None = None):
        self.workers = workers or os.cpu_count() or 1
        self.queue_size = 4 * self.workers if queue_size is None else queue_size
        self.limits = limits or Limits()
        self.config = config or BwrapConfig()
        self.prewarm = prewarm
        self.retry_after_s = retry_after_s
        self.on_run = on_run
        self.stats = SandboxStats()
        root = os.geteuid() == 0
        self._slots = [_Slot(i, base_uid + i if root else None) for i in range(self.workers)]
        self._free: asyncio.Queue[_Slot] = asyncio.Queue()
        for slot in self._slots:
            self._free.put_nowait(slot)
        self._bwrap: str | None = None
        self._extra_binds: tuple[str, ...] = ()
        self._runner_code: bytes | None = None
        self._languages: tuple[Language, ...] | None = None
        self._closed = False

    # -- SessionFactory -----------------------------------------------------------------------------

    def open(self, language: Language, code: str, limits: Limits | None = None, *,
             files: dict[str, bytes] | None = None, wait: bool = True) -> BwrapSession:
        """A session for one program; nothing starts until ``prepare()`` (or the first ``run()``). With
        ``wait=False`` its ``prepare()`` raises SandboxBusy at once when no worker is free, instead of queueing."""
        if language not in ("python", "cpp"):
            raise UnsupportedLanguage(f"language {language!r} is not supported (python, cpp)")
        if language == "cpp" and self._languages is not None and "cpp" not in self._languages:
            raise UnsupportedLanguage("language 'cpp' is not available: no C++ compiler on this server")
        return BwrapSession(self, language, code, limits or self.limits, files or {}, wait)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def check(self) -> SandboxInfo:
        """Really start a sandbox and run a program in it; SandboxFailure says precisely why not."""
        try:
            return await self._check()
        except PermissionError as error:  # e.g. root without CAP_KILL/CAP_SETUID in a container
            raise SandboxFailure(f"the server may not start or stop its sandboxes ({error}); as root it needs the "
                                 "SETUID, SETGID and KILL capabilities, or run it as an ordinary user") from None

    async def _check(self) -> SandboxInfo:
        bwrap = self._resolve()
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip()
        slot = self._slots[0]
        proc = await self._start(slot, self.limits.files_bytes)
        try:
            limits = self.limits.with_(wall_s=10.0)
            failed = await proc.setup("python", "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n",
                                      limits, self.config.compiler)
            reply = None if failed else await proc.run(b"40 2\n", limits)
        except RunnerGone as error:
            raise SandboxFailure(f"the sandbox's runner died during the start-up check: {error}") from None
        finally:
            await proc.aclose()
        if failed or reply is None or reply.raw.stdout != "42\n":
            raise SandboxFailure(f"the start-up check program did not run in the sandbox: {failed or reply}")
        languages: tuple[Language, ...] = ("python",)
        if shutil.which(self.config.compiler[0]):
            languages = ("python", "cpp")
        self._languages = languages
        if self.prewarm:
            for slot in self._slots:
                self._warm(slot)
        uids = (f"{self._slots[0].uid}-{self._slots[-1].uid}" if self._slots[0].uid is not None
                else "the server's uid")
        return SandboxInfo(bwrap, version, self.config.python, proc.python_version, languages, self.workers, uids)

    @property
    def languages(self) -> tuple[Language, ...]:
        """Languages ``check()`` found runnable (python always; cpp when the compiler exists)."""
        return self._languages or ("python",)

    async def aclose(self) -> None:
        """Kill the warm sandboxes; sessions still open end when they are closed."""
        self._closed = True
        for slot in self._slots:
            task, slot.warm = slot.warm, None
            if task is None:
                continue
            with contextlib.suppress(Exception):  # a start that failed has nothing to close
                proc = await task
                await proc.aclose()

    # -- slots ----------------------------------------------------------------------------------------

    def _resolve(self) -> str:
        if self._bwrap is None:
            found = self.config.resolved_bwrap()
            if found is None:
                raise SandboxFailure(f"bubblewrap is not installed ({self.config.bwrap!r} not on PATH); "
                                     "on Debian/Ubuntu: apt-get install bubblewrap")
            if not os.path.exists(self.config.python):
                raise SandboxFailure(f"the sandbox interpreter {self.config.python} does not exist")
            self._extra_binds = interpreter_binds(self.config.python)
            self._runner_code = runner_bytecode(self.config.python)
            self._bwrap = found
        return self._bwrap

    async def _start(self, slot: _Slot, files_bytes: int) -> RunnerProcess:
        try:
            proc = await RunnerProcess.start(self.config, self._resolve(), files_bytes=files_bytes, uid=slot.uid,
                                             extra_binds=self._extra_binds, code=self._runner_code)
        except SandboxFailure:
            self.stats.failures += 1
            raise
        self.stats.sandboxes_started += 1
        return proc

    def _warm(self, slot: _Slot) -> None:
        if slot.warm is None and not self._closed:
            slot.warm = asyncio.get_running_loop().create_task(self._start(slot, self.limits.files_bytes))
            slot.warm.add_done_callback(_consume_error)

    async def _acquire(self, wait: bool = True) -> _Slot:
        if self._free.empty():
            if not wait:  # a session that would rather not wait (spread.py's extra sandboxes): no queueing
                raise SandboxBusy(self.retry_after_s)
            if self.stats.queued >= self.queue_size:
                self.stats.busy += 1
                raise SandboxBusy(self.retry_after_s)
            self.stats.queued += 1
            try:
                slot = await self._free.get()
            finally:
                self.stats.queued -= 1
        else:
            slot = self._free.get_nowait()
        self.stats.sessions += 1
        return slot

    def _release(self, slot: _Slot) -> None:
        self.stats.sessions -= 1
        self._free.put_nowait(slot)
        if self.prewarm:
            self._warm(slot)

    async def _runner(self, slot: _Slot, files_bytes: int) -> RunnerProcess:
        """The slot's warm sandbox if it fits, else a fresh one."""
        task, slot.warm = slot.warm, None
        if task is not None:
            try:
                proc = await task
            except (SandboxFailure, asyncio.CancelledError):
                proc = None
            if proc is not None:
                if proc.files_bytes == files_bytes and not proc.dead and proc.proc.poll() is None:
                    self.stats.warm_starts += 1
                    return proc
                await proc.aclose()
        return await self._start(slot, files_bytes)

    def _count(self, raw: RawRun) -> None:
        self.stats.executions[raw.status] += 1
        self.stats.run_seconds += raw.execution_time
        if self.on_run is not None:
            self.on_run(raw)


def _consume_error(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here; the session that takes the slot sees it again and starts afresh


class BwrapSession:
    """One program in one sandbox: ``prepare()`` once, ``run(stdin)`` per test, ``aclose()`` at the end.

    Runs of one session are serialised (one sandbox); open several sessions to run a sample's tests in
    parallel. Also an async context manager (``async with sandbox.open(...) as session``).
    """

    def __init__(self, pool: Sandbox, language: Language, code: str, limits: Limits, files: dict[str, bytes],
                 wait: bool = True):
        self.language = language
        self.wait = wait
        self.code = code
        self.limits = limits
        self.files = files
        self._pool = pool
        self._slot: _Slot | None = None
        self._proc: RunnerProcess | None = None
        self._prepared = False
        self._compile: RawRun | None = None
        # The C++ compiler's run once prepared (status "ok" or "compile_error", its output); None for Python.
        self.compile_result: RawRun | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> BwrapSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def prepare(self) -> RawRun | None:
        """Take a worker and prepare the program: None, or a ``compile_error`` RawRun (SyntaxError, g++)."""
        async with self._lock:
            return await self._prepare()

    async def _prepare(self) -> RawRun | None:
        if self._prepared:
            return self._compile
        if self._closed:
            raise SandboxFailure("the session is closed")
        if self._slot is None:
            self._slot = await self._pool._acquire(self.wait)
        try:
            self._compile = await self._setup(await self._pool._runner(self._slot, self.limits.files_bytes))
        except BaseException:
            await self.aclose()
            raise
        self._prepared = True
        if self._compile is not None:
            self._pool._count(self._compile)
            if self.language == "cpp":
                self.compile_result = self._compile
        return self._compile

    async def _setup(self, proc: RunnerProcess) -> RawRun | None:
        self._proc = proc
        try:
            step = await proc.setup(self.language, self.code, self.limits, self._pool.config.compiler, self.files)
        except SandboxFailure:
            self._pool.stats.failures += 1
            raise
        if step is not None and step.status == "ok":
            self.compile_result = step
            return None
        return step

    async def run(self, stdin: str, *, fetch: tuple[str, ...] = ()) -> RawRun:
        """One test with this stdin (a fresh process); a compile error answers every run."""
        return (await self.run_with_files(stdin, fetch=fetch))[0]

    async def run_with_files(self, stdin: str | bytes, *, fetch: tuple[str, ...] = ()) -> tuple[RawRun, dict]:
        """``run`` plus the files of the working directory asked back (SandboxFusion's ``fetch_files``)."""
        async with self._lock:
            failed = await self._prepare()
            if failed is not None:
                return failed, {}
            assert self._slot is not None
            if self._proc is None or self._proc.dead:  # the previous test killed its runner: a new sandbox
                await self._replace_runner()
            data = to_bytes(stdin)
            stats = self._pool.stats
            stats.in_flight += 1
            started = time.monotonic()
            try:
                reply = await self._proc.run(data, self.limits, fetch)  # type: ignore[union-attr]
                raw, files = reply.raw, reply.files
            except RunnerGone as gone:
                raw, files = await self._gone(gone, time.monotonic() - started), {}
            finally:
                stats.in_flight -= 1
            self._pool._count(raw)
            return raw, files

    async def _replace_runner(self) -> None:
        assert self._slot is not None
        if self._proc is not None:
            await self._proc.aclose()
        failed = await self._setup(await self._pool._start(self._slot, self.limits.files_bytes))
        if failed is not None:  # compiled before, so the host or the sandbox changed under us
            raise SandboxFailure(f"the program no longer prepares in a new sandbox: {failed.stderr[:500]}")

    async def _gone(self, gone: RunnerGone, elapsed: float) -> RawRun:
        """The runner died or hung during a test: the program's doing, unless the host killed the sandbox."""
        proc = self._proc
        assert proc is not None
        await proc.wait()
        if proc.killed_from_outside:
            self._pool.stats.failures += 1
            raise SandboxFailure(f"the sandbox was killed from outside (signal {-proc.proc.returncode})")
        status = "timeout" if gone.timed_out else "runtime_error"
        return RawRun(status, None if gone.timed_out else -9, "", f"the test killed its sandbox runner: {gone}",
                      elapsed)

    def __del__(self) -> None:
        """A session dropped without ``aclose()``: its sandbox is killed and its worker comes back anyway."""
        proc, slot = getattr(self, "_proc", None), getattr(self, "_slot", None)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the process is killed all the same
            if proc is not None:
                proc.kill()  # subprocess reaps it later (its _cleanup of dropped processes)
        with contextlib.suppress(RuntimeError):  # no running loop: no warm start, the slot still returns
            if slot is not None:
                self._pool._release(slot)

    async def aclose(self) -> None:
        """Kill the sandbox and give the worker back (idempotent)."""
        self._closed = True
        proc, self._proc = self._proc, None
        slot, self._slot = self._slot, None
        try:
            if proc is not None:
                await proc.aclose()
        finally:
            if slot is not None:
                self._pool._release(slot)
