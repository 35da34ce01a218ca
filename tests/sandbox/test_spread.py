"""services/sandbox/spread.py: one sample's tests spread over idle sandbox workers, and kept on one sandbox when
no worker is idle (under load one sandbox per sample is the cheapest)."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.sandbox import Limits, Sandbox, SandboxBusy
from services.sandbox.spread import Spread
from tests.sandbox.conftest import needs_bwrap

pytestmark = needs_bwrap

NAP = "import sys, time\ntime.sleep(float(sys.stdin.read()))\nprint('slept')\n"


async def _four_naps(spread: Spread, seconds: float) -> tuple[float, int]:
    session = spread.open("python", NAP, Limits(wall_s=10))
    try:
        assert await session.prepare() is None
        t0 = time.monotonic()
        runs = await asyncio.gather(*(session.run(str(seconds)) for _ in range(4)))
        assert [r.stdout for r in runs] == ["slept\n"] * 4
        return time.monotonic() - t0, len(session.sessions)
    finally:
        await session.aclose()


async def test_a_lone_sample_spreads_over_idle_workers(make_sandbox) -> None:
    sandbox: Sandbox = make_sandbox(workers=4)
    await sandbox.check()
    wall, width = await _four_naps(Spread(sandbox), 1.0)
    assert width > 1 and wall < 3.0  # 4 one-second tests in parallel, not 4 s one after the other


async def test_a_sample_keeps_one_sandbox_when_no_worker_is_idle(make_sandbox) -> None:
    sandbox: Sandbox = make_sandbox(workers=2)
    await sandbox.check()
    busy = sandbox.open("python", NAP, Limits(wall_s=10))  # holds the other worker
    try:
        assert await busy.prepare() is None
        wall, width = await _four_naps(Spread(sandbox), 0.3)
        assert width == 1 and wall >= 1.2
    finally:
        await busy.aclose()


async def test_cpp_keeps_one_session_compiled_once(make_sandbox) -> None:
    sandbox: Sandbox = make_sandbox(workers=4)
    await sandbox.check()
    session = Spread(sandbox).open("cpp", "int main() { return 0; }", Limits())
    try:
        assert not hasattr(session, "sessions")  # the sandbox's own session: one compile per sample
    finally:
        await session.aclose()


async def test_two_samples_spreading_at_once_never_deadlock(make_sandbox) -> None:
    """Two samples that each hold a worker never wait for the other's: the extra sandboxes are taken only when
    free at once (a sample waiting for a second worker while holding one would deadlock with its twin)."""
    sandbox: Sandbox = make_sandbox(workers=2)
    await sandbox.check()
    spread = Spread(sandbox)
    for _ in range(5):
        walls = await asyncio.wait_for(asyncio.gather(_four_naps(spread, 0.2), _four_naps(spread, 0.2)), 30)
        assert all(width <= 2 for _, width in walls)
    assert sandbox.stats.sessions == 0 and sandbox.stats.queued == 0


async def test_a_sandbox_that_found_no_free_worker_does_not_count_against_the_width(make_sandbox) -> None:
    sandbox: Sandbox = make_sandbox(workers=2)
    await sandbox.check()
    busy = sandbox.open("python", NAP, Limits(wall_s=10))
    session = Spread(sandbox).open("python", NAP, Limits(wall_s=10))
    try:
        assert await busy.prepare() is None and await session.prepare() is None  # both workers taken
        with pytest.raises(SandboxBusy):
            await session._new(wait=False)  # what _acquire tries when a worker looked spare a moment ago
        assert len(session.sessions) == 1
    finally:
        await session.aclose()
        await busy.aclose()
