"""Fixtures of the sandbox tests: a real bubblewrap ``Sandbox`` per test, and a check that nothing is left over."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from services.sandbox import BASE_UID, Sandbox, SandboxFailure

WORKERS = 4


def _bwrap_works() -> str | None:
    """None when a sandbox starts here; else why not (the tests skip with that reason)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed: scripts/setup.sh installs it as root"

    async def probe() -> None:
        sandbox = Sandbox(workers=1, prewarm=False)
        await sandbox.check()

    try:
        asyncio.run(probe())
    except SandboxFailure as error:
        return str(error)
    return None


_REASON = _bwrap_works()
needs_bwrap = pytest.mark.skipif(_REASON is not None, reason=f"no working sandbox: {_REASON}")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not on PATH: C++ cannot be compiled")


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    box = Sandbox(workers=WORKERS)
    await box.check()
    try:
        yield box
    finally:
        await box.aclose()


@pytest.fixture
async def make_sandbox() -> AsyncIterator[Callable[..., Sandbox]]:
    """Sandboxes with other settings; each is closed after the test."""
    made: list[Sandbox] = []

    def make(**kwargs: object) -> Sandbox:
        box = Sandbox(**kwargs)  # type: ignore[arg-type]
        made.append(box)
        return box

    try:
        yield make
    finally:
        for box in made:
            await box.aclose()


def _status(pid: str) -> dict[str, str]:
    fields = {}
    for line in (Path("/proc") / pid / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()[0] if value.split() else ""
    return fields


def _owner(pid: str) -> str | None:
    """Who a process belongs to: "tests" when this pytest process started its sandbox itself, "other" when a
    server (a session fixture of ours, or anyone else's process on the machine) runs it, None when it hangs from
    nobody: reparented to init, it escaped its sandbox."""
    me, child = os.getpid(), pid
    while True:
        parent = _status(child)["PPid"]
        if int(parent) == me:
            cmdline = (Path("/proc") / child / "cmdline").read_bytes()
            return "tests" if b"bwrap" in cmdline.split(b"\0")[0] else "other"
        if parent in ("0", "1"):
            return None
        if int(_status(parent)["Uid"]) not in _SANDBOX_UIDS and b"bwrap" not in (
                Path("/proc") / parent / "cmdline").read_bytes().split(b"\0")[0]:
            return "other"  # a live process that is no sandbox started it: its business, not an escape
        child = parent


_SANDBOX_UIDS = range(BASE_UID, BASE_UID + 256)


def sandbox_processes() -> list[str]:
    """Host processes of a sandbox the tests ran themselves, or of none (escaped): bwrap, or anything running as a
    sandbox uid (when the tests run as root). A live server's sandboxes (a session fixture's) are not counted."""
    found = []
    uids = range(BASE_UID, BASE_UID + 256) if os.geteuid() == 0 else range(0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = _status(entry.name)
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            uid, ppid = int(status["Uid"]), int(status["PPid"])
            ours = ppid == os.getpid() and "bwrap" in cmdline
            if (uid in uids or ours) and _owner(entry.name) != "other":
                found.append(f"{entry.name} uid={uid} {cmdline[:120]}")
        except (OSError, KeyError, ValueError):
            continue
    return found


def files_of_sandbox_uids(*tops: str) -> list[str]:
    """Files under the host's temporary directories owned by a sandbox uid (none may exist)."""
    if os.geteuid() != 0:
        return []
    uids = range(BASE_UID, BASE_UID + 256)
    found = []
    for top in tops:
        for root, dirs, names in os.walk(top, onerror=lambda _: None):
            for name in dirs + names:
                path = os.path.join(root, name)
                try:
                    if os.lstat(path).st_uid in uids:
                        found.append(path)
                except OSError:
                    continue
    return found


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After each module: no sandbox process and no file of a sandbox uid remains on the host."""
    yield
    left: list[str] = []
    for _ in range(50):  # a killed sandbox's namespace takes a moment to empty
        left = sandbox_processes()
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"sandbox processes outlived the tests: {left}"
    assert not files_of_sandbox_uids("/tmp", "/var/tmp", "/dev/shm"), "sandbox files left on the host"
