"""The Sandbox pool: start-up check, bounded workers and queue, SandboxBusy, counters, warm sandboxes, and a
session that outlives a runner its program killed."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.sandbox import BwrapConfig, Limits, RawRun, Sandbox, SandboxBusy, SandboxFailure, UnsupportedLanguage
from tests.sandbox.conftest import needs_bwrap

pytestmark = needs_bwrap

ECHO = "print(input())\n"


async def test_check_reports_what_runs(sandbox: Sandbox) -> None:
    info = await sandbox.check()
    assert info.bwrap_version.startswith("bubblewrap")
    assert info.python_version.count(".") == 2
    assert "python" in info.languages
    assert ("cpp" in info.languages) == (shutil.which("g++") is not None)
    assert info.workers == sandbox.workers


async def test_check_fails_precisely_without_bwrap() -> None:
    with pytest.raises(SandboxFailure, match="bubblewrap is not installed"):
        await Sandbox(workers=1, config=BwrapConfig(bwrap="/nonexistent/bwrap")).check()


@pytest.fixture
def bwrap_without_userns() -> Iterator[str]:
    """bwrap run where user namespaces cannot be created (nested in a bwrap with --disable-userns)."""
    folder = tempfile.mkdtemp(prefix="genrm-bwrap-")
    os.chmod(folder, 0o755)  # the sandbox uid must be able to exec it
    wrapper = Path(folder) / "bwrap"
    wrapper.write_text('#!/bin/sh\nexec bwrap --unshare-user --disable-userns --dev-bind / / bwrap "$@"\n')
    wrapper.chmod(0o755)
    try:
        yield str(wrapper)
    finally:
        shutil.rmtree(folder)


async def test_check_fails_precisely_without_user_namespaces(bwrap_without_userns: str) -> None:
    with pytest.raises(SandboxFailure, match=r"cannot create the sandbox's namespaces.*bwrap: "):
        await Sandbox(workers=1, config=BwrapConfig(bwrap=bwrap_without_userns)).check()


async def test_unknown_language_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(UnsupportedLanguage, match="'rust'"):
        sandbox.open("rust", "fn main() {}")  # type: ignore[arg-type]


async def test_bounded_workers_queue_and_busy(make_sandbox) -> None:
    sandbox = make_sandbox(workers=1, queue_size=1, prewarm=False, retry_after_s=2.5)
    first = sandbox.open("python", ECHO)
    assert await first.prepare() is None
    assert sandbox.stats.sessions == 1
    second = sandbox.open("python", ECHO)
    waiting = asyncio.create_task(second.prepare())
    await asyncio.sleep(0.05)
    assert not waiting.done() and sandbox.stats.queued == 1
    with pytest.raises(SandboxBusy) as busy:
        await sandbox.open("python", ECHO).prepare()
    assert busy.value.retry_after_s == 2.5 and sandbox.stats.busy == 1
    assert (await first.run("one")).stdout == "one\n"
    await first.aclose()
    assert await asyncio.wait_for(waiting, 10) is None
    assert (await second.run("two")).stdout == "two\n"
    await second.aclose()
    assert (sandbox.stats.sessions, sandbox.stats.queued, sandbox.stats.in_flight) == (0, 0, 0)


async def test_a_cancelled_wait_leaves_the_queue(make_sandbox) -> None:
    sandbox = make_sandbox(workers=1, queue_size=1, prewarm=False)
    holder = sandbox.open("python", ECHO)
    await holder.prepare()
    waiting = asyncio.create_task(sandbox.open("python", ECHO).prepare())
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sandbox.stats.queued == 0
    await holder.aclose()
    async with sandbox.open("python", ECHO) as again:  # the slot came back
        assert (await again.run("x")).stdout == "x\n"


async def test_counters_and_the_run_hook(make_sandbox) -> None:
    seen: list[RawRun] = []
    sandbox = make_sandbox(workers=2, on_run=seen.append)
    await sandbox.check()
    code = "import sys\nx = int(input())\nsys.exit(x)\n"
    async with sandbox.open("python", code) as session:
        for stdin in ("0", "0", "3"):
            await session.run(stdin)
    async with sandbox.open("python", "def f(:\n") as session:
        await session.run("")
    assert sandbox.stats.executions == {"ok": 2, "runtime_error": 1, "compile_error": 1}
    assert [r.status for r in seen] == ["ok", "ok", "runtime_error", "compile_error"]
    assert sandbox.stats.run_seconds > 0
    assert sandbox.stats.warm_starts == 2  # check() started both slots' sandboxes ahead
    assert sandbox.stats.failures == 0


async def test_parallel_sessions_use_every_worker(make_sandbox) -> None:
    sandbox = make_sandbox(workers=3, queue_size=20)
    code = "import time\ntime.sleep(0.3)\nprint('done')\n"
    started = asyncio.get_running_loop().time()

    async def one() -> str:
        async with sandbox.open("python", code) as session:
            return (await session.run("")).stdout

    assert await asyncio.gather(*(one() for _ in range(6))) == ["done\n"] * 6
    assert asyncio.get_running_loop().time() - started < 6 * 0.3  # at least two ran at once


async def test_the_session_goes_on_after_its_runner_is_killed(sandbox: Sandbox) -> None:
    code = "import os, signal\nif input() == 'kill':\n    os.kill(os.getppid(), signal.SIGKILL)\nprint('alive')\n"
    async with sandbox.open("python", code) as session:
        assert (await session.run("fine")).stdout == "alive\n"
        killed = await session.run("kill")
        assert killed.status == "runtime_error" and "killed its sandbox runner" in killed.stderr
        assert (await session.run("fine")).stdout == "alive\n"  # a new sandbox for the rest of the session
    assert sandbox.stats.failures == 0


async def test_a_frozen_runner_is_a_timeout(sandbox: Sandbox) -> None:
    code = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n"
    async with sandbox.open("python", code, Limits(wall_s=0.5)) as session:
        raw = await session.run("")
    assert raw.status == "timeout" and raw.return_code is None
    assert sandbox.stats.failures == 0


async def test_files_and_fetch(sandbox: Sandbox) -> None:
    code = "print(open('data/in.txt').read().strip())\nopen('result.txt', 'w').write('42')\n"
    async with sandbox.open("python", code, files={"data/in.txt": b"hello\n"}) as session:
        raw, files = await session.run_with_files("", fetch=("result.txt", "missing.txt", "/etc/passwd"))
    assert (raw.status, raw.stdout) == ("ok", "hello\n")
    assert files == {"result.txt": b"42"}


async def test_a_dropped_session_gives_its_worker_back(make_sandbox) -> None:
    import gc

    sandbox = make_sandbox(workers=1, queue_size=0, prewarm=False)
    dropped = sandbox.open("python", ECHO)
    await dropped.prepare()
    del dropped
    gc.collect()
    assert sandbox.stats.sessions == 0
    async with sandbox.open("python", ECHO) as session:  # the only worker is free again
        assert (await session.run("back")).stdout == "back\n"
