"""One sample's tests in parallel across idle sandbox workers.

A bubblewrap session is one sandbox running one test at a time. ``Spread`` gives a Python sample more
sandboxes while workers are idle, so a lone sample's tests finish in the time of the slowest few instead of
their sum; under load (no idle worker) a sample keeps its one sandbox, which is the cheapest per test. C++
keeps one session: it is compiled once per sample.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from services.sandbox.session import Language, Limits, RawRun, SandboxBusy, Session


class Spread:
    """A SessionFactory over a ``Sandbox`` (anything else of it, ``check``/``stats``/..., passes through)."""

    def __init__(self, sandbox: Any, max_width: int = 8):
        self.sandbox, self.max_width = sandbox, max_width

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sandbox, name)

    def open(self, language: Language, code: str, limits: Limits | None = None, **options: Any) -> Session:
        if language != "python" or options:  # files, or a session that must not queue: the sandbox's own
            return self.sandbox.open(language, code, limits, **options)
        return SpreadSession(self, code, limits or Limits())

    def spare(self) -> bool:
        """A worker nobody holds or waits for."""
        stats = self.sandbox.stats
        return stats.sessions + stats.queued < self.sandbox.workers


class SpreadSession:
    """The Session interface over up to ``max_width`` sessions of one program."""

    def __init__(self, owner: Spread, code: str, limits: Limits):
        self.owner, self.code, self.limits = owner, code, limits
        self.sessions: list[Any] = []
        self.idle: asyncio.Queue[Any] = asyncio.Queue()
        self.opening = 0

    async def _new(self, wait: bool = True) -> tuple[Any, RawRun | None]:
        session = self.owner.sandbox.open("python", self.code, self.limits, wait=wait)
        self.sessions.append(session)
        try:
            return session, await session.prepare()
        except SandboxBusy:  # it took no worker: nothing to close, and it must not count against max_width
            self.sessions.remove(session)
            raise

    async def prepare(self) -> RawRun | None:
        session, failed = await self._new()
        if failed is None:
            self.idle.put_nowait(session)
        return failed

    async def run(self, stdin: str) -> RawRun:
        session = await self._acquire()
        try:
            return await session.run(stdin)
        finally:
            self.idle.put_nowait(session)

    async def _acquire(self) -> Any:
        if self.idle.empty() and len(self.sessions) + self.opening < self.owner.max_width and self.owner.spare():
            self.opening += 1
            try:  # never wait for another worker while holding one: two samples doing so would deadlock
                session, failed = await self._new(wait=False)
                if failed is None:
                    return session
            except SandboxBusy:  # the spare worker was taken meanwhile: wait for one of ours
                pass
            finally:
                self.opening -= 1
        return await self.idle.get()

    async def aclose(self) -> None:
        sessions, self.sessions = self.sessions, []
        for session in sessions:
            with contextlib.suppress(Exception):
                await session.aclose()
