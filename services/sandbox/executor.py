"""The server's end of one sandbox: start bwrap with the runner inside, send it a program and tests, kill it.

A ``RunnerProcess`` is one bubblewrap sandbox (one set of namespaces, one private tmpfs) holding a warm runner
(``runner.py``). It knows nothing of pools or sessions: ``pool.py`` decides when to start, reuse and kill one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from dataclasses import dataclass

from services.sandbox import bwrap, runner
from services.sandbox.session import Language, Limits, RawRun, SandboxFailure

START_TIMEOUT_S = 20.0
# Time the runner may take beyond a test's own limit (forking, killing what the test left, the reset) before
# the server stops waiting and kills the whole sandbox.
GRACE_S = 3.0


class RunnerGone(Exception):
    """The runner stopped answering or died: during a test that is the program's doing."""

    def __init__(self, message: str, *, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


@dataclass
class RunReply:
    """One test as the runner reported it, plus the files asked back."""

    raw: RawRun
    files: dict[str, bytes]


_SECCOMP = bwrap.seccomp_filter()


def _seccomp_fd() -> int | None:
    """A file holding the seccomp program, for bwrap's --seccomp (it reads it at start-up)."""
    if _SECCOMP is None:
        return None
    fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
    os.write(fd, _SECCOMP)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _limits_wire(limits: Limits) -> dict:
    return {"wall_s": limits.wall_s, "cpu_s": limits.cpu_limit_s, "memory_mb": limits.memory_mb,
            "processes": limits.processes, "output_bytes": limits.output_bytes, "compile_s": limits.compile_s}


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def to_bytes(text: str | bytes) -> bytes:
    """Text as the bytes a program reads: UTF-8; bytes smuggled in a str (surrogateescape) come back as bytes."""
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass")


class RunnerProcess:
    """One started sandbox with its runner ready for a program."""

    def __init__(self, proc: subprocess.Popen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 files_bytes: int, uid: int | None):
        self.proc = proc
        self.files_bytes = files_bytes
        self.uid = uid
        self._reader = reader
        self._writer = writer
        self.python_version = ""
        self.dead = False  # no more messages: the runner is gone or being killed
        self.killed = False  # the server sent bwrap SIGKILL

    @classmethod
    async def start(cls, config: bwrap.BwrapConfig, bwrap_path: str, *, files_bytes: int, uid: int | None,
                    extra_binds: tuple[str, ...] = (), code: bytes | None = None) -> RunnerProcess:
        """Start bwrap and wait for the runner's hello; SandboxFailure (with bwrap's own words) if it cannot.

        ``code``: the runner's bytecode (``bwrap.runner_bytecode``), else it starts from source."""
        host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        seccomp = _seccomp_fd()
        passed = (child.fileno(),) if seccomp is None else (child.fileno(), seccomp)
        program = bwrap.runner_argv(config, child.fileno(), code)
        argv = bwrap.command(config, bwrap_path, program, files_bytes, extra_binds, seccomp)
        as_user = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
        try:
            # Started from the event loop's thread on purpose: bwrap's --die-with-parent follows the thread
            # that forked it, and a pool thread that exits would take the sandbox with it.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=bwrap.SANDBOX_ENV, cwd="/", pass_fds=passed,
                                    **as_user)
        except OSError as error:
            host.close()
            raise SandboxFailure(f"cannot start bubblewrap ({bwrap_path}): {error}") from error
        finally:
            child.close()
            if seccomp is not None:
                os.close(seccomp)
        reader, writer = await asyncio.open_unix_connection(sock=host)
        self = cls(proc, reader, writer, files_bytes, uid)
        try:
            if code is not None:
                writer.write(code)
            hello, _ = await asyncio.wait_for(self._recv(), START_TIMEOUT_S)
        except (RunnerGone, asyncio.TimeoutError) as error:
            said = await self._last_words()
            if "namespace" in said:
                raise SandboxFailure(
                    "bubblewrap cannot create the sandbox's namespaces (it needs unprivileged user namespaces: "
                    "sysctl user.max_user_namespaces > 0, and in a container a seccomp/AppArmor profile that "
                    f"allows them): {said}") from None
            raise SandboxFailure(f"the sandbox did not start: {said or error!r}") from None
        except BaseException:  # cancelled: the process must not outlive the caller's interest in it
            self.kill()
            await asyncio.shield(self.wait())
            raise
        self.python_version = hello.get("python", "")
        return self

    async def setup(self, language: Language, code: str, limits: Limits, compiler: tuple[str, ...],
                    files: dict[str, bytes] | None = None) -> RawRun | None:
        """Send the program: a ``compile_error`` RawRun when it does not prepare; when it does, None for Python
        and the compiler's run (status ``ok``, its warnings) for C++."""
        names = [runner.MAIN[language], *(files or {})]
        blobs = [to_bytes(code), *(files or {}).values()]
        header = {"op": "setup", "language": language, "files": names, "limits": _limits_wire(limits),
                  "compiler": list(compiler)}
        try:
            reply, out = await self._call(header, blobs, limits.compile_s + GRACE_S)
        except RunnerGone as error:
            said = await self._last_words()
            raise SandboxFailure(f"the sandbox died while preparing the program: {said or error}") from None
        if not out:
            return None
        return RawRun(reply["status"], reply["return_code"], _decode(out[0]), _decode(out[1]), reply["time"])

    async def run(self, stdin: bytes, limits: Limits, fetch: tuple[str, ...] = ()) -> RunReply:
        """One test; RunnerGone if the runner died or hung during it (the program's doing)."""
        header = {"op": "run", "limits": _limits_wire(limits), "fetch": list(fetch)}
        reply, out = await self._call(header, [stdin], limits.wall_s + GRACE_S)
        raw = RawRun(reply["status"], reply["return_code"], _decode(out[0]), _decode(out[1]), reply["time"])
        return RunReply(raw, dict(zip(reply["fetched"], out[2:], strict=True)))

    async def _call(self, header: dict, blobs: list[bytes], timeout_s: float) -> tuple[dict, list[bytes]]:
        if self.dead:
            raise RunnerGone("the sandbox is closed")
        try:
            self._writer.write(runner.pack(header, blobs))
            await self._writer.drain()
            reply, out = await asyncio.wait_for(self._recv(), timeout_s)
        except asyncio.TimeoutError:
            self.kill()
            raise RunnerGone(f"the runner did not answer within {timeout_s:g}s", timed_out=True) from None
        except (ConnectionError, RunnerGone) as error:
            await self._settle()
            raise RunnerGone(f"the runner is gone: {error}") from None
        except BaseException:  # cancelled mid-message: the conversation cannot resume, the sandbox goes
            self.kill()
            raise
        if reply.get("op") == "error":
            self.kill()
            raise SandboxFailure(f"the sandbox runner failed: {reply.get('message', '')}")
        return reply, out

    async def _recv(self) -> tuple[dict, list[bytes]]:
        try:
            size = await self._reader.readexactly(4)
            header = runner.unpack_header(await self._reader.readexactly(int.from_bytes(size, "big")))
            blobs = [await self._reader.readexactly(n) if n else b"" for n in header["blobs"]]
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            raise RunnerGone(f"control socket closed ({error})") from None
        return header, blobs

    async def _last_words(self) -> str:
        """What bwrap (or the runner) wrote to stderr before dying: the reason a sandbox cannot start."""
        self.kill()
        await self.wait()
        said = b""
        if self.proc.stderr is not None:
            os.set_blocking(self.proc.stderr.fileno(), False)
            with contextlib.suppress(OSError, TypeError):
                said = self.proc.stderr.read(8192) or b""
            self.proc.stderr.close()
        return said.decode(errors="replace").strip()

    async def _settle(self) -> None:
        """The runner is gone: let bwrap exit by itself (its status says who ended it), then make sure."""
        self.dead = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(_wait_exit(self.proc)), 1.0)
        self.kill()

    @property
    def killed_from_outside(self) -> bool:
        """bwrap ended by a signal the server did not send (the program cannot reach it: another namespace)."""
        code = self.proc.returncode
        return code is not None and code < 0 and not self.killed

    def kill(self) -> None:
        """End the sandbox now: bwrap's init dies with it (--die-with-parent), and the namespace with the init."""
        self.dead = True
        if not self.killed:
            self.killed = self.proc.returncode is None
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self._writer.close()

    async def wait(self) -> None:
        """Reap bwrap without blocking the loop (a pidfd, else a thread)."""
        if self.proc.returncode is None:
            await _wait_exit(self.proc)

    async def aclose(self) -> None:
        self.kill()
        await self.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


async def _wait_exit(proc: subprocess.Popen) -> None:
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        await asyncio.to_thread(proc.wait)
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        if proc.poll() is None:
            await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    proc.wait()
