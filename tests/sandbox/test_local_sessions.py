"""The unsandboxed ``--code-sandbox none`` sessions: real processes under rlimits, statuses, cleanup."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from services.sandbox.local import LocalSession, LocalSessions
from services.sandbox.session import Limits, RawRun, SandboxBusy, SandboxFailure

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not on PATH")


async def run_once(code: str, stdin: str = "", limits: Limits | None = None, language: str = "python",
                   factory: LocalSessions | None = None) -> RawRun:
    session = (factory or LocalSessions()).open(language, code, limits or Limits())  # type: ignore[arg-type]
    try:
        assert await session.prepare() is None
        return await session.run(stdin)
    finally:
        await session.aclose()


async def test_a_program_reads_stdin_and_exits_0() -> None:
    run = await run_once("import sys\nprint(sys.stdin.read().upper(), end='')\n", "abc\n")
    assert (run.status, run.return_code, run.stdout) == ("ok", 0, "ABC\n")


async def test_a_non_zero_exit_is_a_runtime_error_with_its_stderr() -> None:
    run = await run_once("print('out')\nraise ValueError('boom')\n")
    assert run.status == "runtime_error" and run.return_code == 1
    assert run.stdout == "out\n" and "ValueError: boom" in run.stderr


async def test_wall_time() -> None:
    started = time.monotonic()
    run = await run_once("import time\ntime.sleep(30)\n", limits=Limits(wall_s=0.5))
    assert run.status == "timeout" and time.monotonic() - started < 5


async def test_cpu_time() -> None:
    run = await run_once("while True:\n    pass\n", limits=Limits(wall_s=20, cpu_s=1))
    assert run.status == "timeout" and run.execution_time < 10


async def test_memory() -> None:
    run = await run_once("x = bytearray(512 * 1024 * 1024)\n", limits=Limits(memory_mb=256))
    assert run.status == "memory_limit", run.stderr


async def test_output_cap_kills_at_once() -> None:
    run = await run_once("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
                         limits=Limits(output_bytes=1 << 20, wall_s=20))
    assert run.status == "output_limit" and run.execution_time < 10
    assert len(run.stdout) + len(run.stderr) <= 1 << 20


async def test_a_syntax_error_is_a_compile_error_at_prepare() -> None:
    session = LocalSessions().open("python", "def f(:\n    pass\n", Limits())
    try:
        failed = await session.prepare()
        assert failed is not None and failed.status == "compile_error" and "SyntaxError" in failed.stderr
    finally:
        await session.aclose()


async def test_the_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENRM_API_KEY", "secret-key")
    run = await run_once("import os\nprint(sorted(os.environ))\nprint(os.getcwd() == os.environ['HOME'])\n")
    assert "GENRM_API_KEY" not in run.stdout and "secret-key" not in run.stdout
    assert run.stdout.endswith("True\n")


async def test_each_run_has_a_private_directory_removed_after_it_and_the_session_removes_its_own() -> None:
    session = LocalSessions().open("python", "import os\nopen('f', 'w').write('x')\nprint(os.getcwd())\n", Limits())
    assert isinstance(session, LocalSession)
    assert await session.prepare() is None
    first, second = await session.run(""), await session.run("")
    assert first.stdout != second.stdout
    assert not Path(first.stdout.strip()).exists() and not Path(second.stdout.strip()).exists()
    assert session.dir is not None and session.dir.exists()
    directory = session.dir
    await session.aclose()
    assert not directory.exists()


async def test_the_whole_process_group_is_killed_after_a_run(tmp_path: Path) -> None:
    code = ("import os, subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(tmp_path / 'pid')!r}, 'w').write(str(child.pid))\n")
    run = await run_once(code)
    assert run.status == "ok"
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _alive(pid)


async def test_a_child_that_leaves_the_group_does_not_hold_the_run(tmp_path: Path) -> None:
    """Local mode cannot kill a child that called setsid() (the sandbox's PID namespace does); it must not keep
    the run waiting on the pipes it holds either. The test kills that child itself."""
    code = ("import os, subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
            f"open({str(tmp_path / 'pid')!r}, 'w').write(str(child.pid))\n"
            "print('done')\n")
    started = time.monotonic()
    run = await run_once(code)
    pid = int((tmp_path / "pid").read_text())
    try:
        assert (run.status, run.stdout) == ("ok", "done\n") and time.monotonic() - started < 5
    finally:
        os.kill(pid, 9)


async def test_unread_stdin_does_not_block() -> None:
    run = await run_once("print('no read')\n", stdin="x" * (8 << 20))
    assert (run.status, run.stdout) == ("ok", "no read\n")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_busy_past_the_queue() -> None:
    factory = LocalSessions(workers=1, queue_size=0)
    session = factory.open("python", "import time\ntime.sleep(1)\n", Limits())
    try:
        assert await session.prepare() is None
        first = asyncio.ensure_future(session.run(""))
        await asyncio.sleep(0.2)
        with pytest.raises(SandboxBusy):
            await session.run("")
        assert (await first).status == "ok"
    finally:
        await session.aclose()


async def test_an_interpreter_that_cannot_start_is_a_sandbox_failure() -> None:
    session = LocalSessions(python="/nonexistent/python3").open("python", "print(1)\n", Limits())
    with pytest.raises(SandboxFailure):
        await session.prepare()
    await session.aclose()


@needs_gxx
async def test_cpp_compiled_once_then_run_per_stdin() -> None:
    code = "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n"
    session = LocalSessions().open("cpp", code, Limits())
    try:
        assert await session.prepare() is None
        runs = await asyncio.gather(session.run("1 2"), session.run("40 2"))
        assert [(r.status, r.stdout) for r in runs] == [("ok", "3\n"), ("ok", "42\n")]
    finally:
        await session.aclose()


@needs_gxx
async def test_cpp_compile_error_and_bad_alloc() -> None:
    session = LocalSessions().open("cpp", "int main() { return x; }\n", Limits())
    failed = await session.prepare()
    await session.aclose()
    assert failed is not None and failed.status == "compile_error" and "error" in failed.stderr
    code = "#include <vector>\nint main() { std::vector<char> v(1UL << 31); return v[5]; }\n"
    run = await run_once(code, language="cpp", limits=Limits(memory_mb=256))
    assert run.status == "memory_limit", run.stderr


def test_no_session_directory_is_left_behind() -> None:
    """Runs last in this file: every session above removed its directory (this process's only)."""
    mine = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("genrm-code-*") if p.stat().st_uid == os.getuid()]
    assert not [p for p in mine if p.stat().st_mtime > _STARTED]


_STARTED = time.time()
