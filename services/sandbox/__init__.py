"""Running the policy's programs: sandboxed sessions, the code rule, and the SandboxFusion-compatible runner.

The sandbox's public API::

    sandbox = Sandbox(workers=8, queue_size=32)   # bubblewrap; a SessionFactory
    info = await sandbox.check()                   # really starts one; SandboxFailure says why it cannot
    async with sandbox.open("python", code, Limits(wall_s=2)) as session:
        failed = await session.prepare()           # None, or a compile_error RawRun
        raw = await session.run(stdin)             # RawRun(status, return_code, stdout, stderr, execution_time)
    sandbox.stats                                  # SandboxStats counters for metrics
    await sandbox.aclose()
"""

from services.sandbox.bwrap import SANDBOX_ENV, BwrapConfig
from services.sandbox.pool import BASE_UID, BwrapSession, Sandbox, SandboxInfo, SandboxStats, UnsupportedLanguage
from services.sandbox.session import (
    Language,
    Limits,
    RawRun,
    RunStatus,
    SandboxBusy,
    SandboxFailure,
    Session,
    SessionFactory,
)

__all__ = [
    "BASE_UID",
    "SANDBOX_ENV",
    "BwrapConfig",
    "BwrapSession",
    "Language",
    "Limits",
    "RawRun",
    "RunStatus",
    "Sandbox",
    "SandboxBusy",
    "SandboxFailure",
    "SandboxInfo",
    "SandboxStats",
    "Session",
    "SessionFactory",
    "UnsupportedLanguage",
]
