"""services/genrm_server/cpu_pool.py: work runs in spawned worker processes created on first use; a call past its
time limit raises ``TimeoutError`` at the limit; a worker that dies fails its call and the pool serves the next."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import pytest

from services.genrm_server.cpu_pool import CpuPool
from tests.support import cpu_tasks


@pytest.fixture()
def pool() -> Iterator[CpuPool]:
    p = CpuPool(1)
    yield p
    p.shutdown()


def _children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


async def test_work_runs_in_a_spawned_worker_started_on_first_use(pool, monkeypatch):
    before = _children()
    CpuPool(2)  # a server that never needs the pool pays nothing
    assert _children() == before
    monkeypatch.setattr(cpu_tasks, "MARK", "changed in the test process")
    pid = await pool.run(os.getpid, timeout_s=60)
    assert pid != os.getpid() and pid in _children() - before
    # A forked worker would share the test process's memory; a spawned one imported the module afresh.
    assert await pool.run(cpu_tasks.mark, timeout_s=60) == "as imported"
    assert await pool.run(os.getpid, timeout_s=60) == pid  # the worker is kept for the next call


async def test_a_call_past_its_time_limit_raises_timeout_error_at_the_limit(pool):
    await pool.run(os.getpid, timeout_s=60)  # the worker is up: starting it is not part of the timed call
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await pool.run(time.sleep, 5, timeout_s=0.5)
    assert 0.45 <= time.monotonic() - t0 < 2.0


async def test_a_dead_worker_fails_its_call_and_the_next_call_gets_a_fresh_pool(pool):
    first = await pool.run(os.getpid, timeout_s=60)
    with pytest.raises(BrokenProcessPool):
        await pool.run(os._exit, 3, timeout_s=60)  # the worker process dies mid-call
    again = await pool.run(os.getpid, timeout_s=60)
    assert again not in (first, os.getpid())
    assert await pool.run(sum, [1, 2, 3], timeout_s=60) == 6
