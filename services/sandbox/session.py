"""What running untrusted code means here: the limits, the raw outcome of one run, and a session's interface.

A *session* holds one program (a solution, or a harness wrapping it) prepared once (a C++ compile, a Python
syntax check) and runs it on many stdins, one process per run. The bubblewrap sandbox and the unsandboxed
``--code-sandbox none`` mode are two implementations; the code rule (extraction, test cases, comparison,
scoring) only sees this interface, so it never knows which isolation ran the program.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol

Language = Literal["python", "cpp"]

# How one run ended, before any comparison with an expected output (that happens outside the sandbox).
RunStatus = Literal["ok", "runtime_error", "timeout", "memory_limit", "output_limit", "compile_error"]


@dataclass(frozen=True)
class Limits:
    """Per-run limits (specs/code-rule.md §5); a request may lower or raise them within the server's maxima."""

    wall_s: float = 6.0
    cpu_s: float | None = None  # None: the wall time
    memory_mb: int = 1024  # address space
    processes: int = 64
    output_bytes: int = 4 * 1024 * 1024  # stdout + stderr
    files_bytes: int = 64 * 1024 * 1024  # written in the private working directory
    compile_s: float = 20.0

    @property
    def cpu_limit_s(self) -> float:
        return self.cpu_s if self.cpu_s is not None else self.wall_s

    def with_(self, **changes: object) -> Limits:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class RawRun:
    """One process run: how it ended, what it printed (each stream cut at the output cap) and how long it took."""

    status: RunStatus
    return_code: int | None  # negative: the signal that ended it; None: killed at a time limit (run or compile)
    stdout: str
    stderr: str
    execution_time: float  # seconds of wall time


class SandboxFailure(Exception):
    """The sandbox itself failed (cannot start, killed by the host): never a score, always an error."""


class SandboxBusy(Exception):
    """Every sandbox worker is busy and the queue is full: 503 with ``Retry-After``."""

    def __init__(self, retry_after_s: float = 1.0):
        super().__init__(f"sandbox busy; retry after {retry_after_s:g}s")
        self.retry_after_s = retry_after_s


class Session(Protocol):
    """One prepared program. ``prepare()`` returns None, or a RawRun with status ``compile_error``."""

    async def prepare(self) -> RawRun | None: ...

    async def run(self, stdin: str) -> RawRun: ...

    async def aclose(self) -> None: ...


class SessionFactory(Protocol):
    """Opens sessions: the sandbox (bubblewrap) or the unsandboxed local mode."""

    def open(self, language: Language, code: str, limits: Limits) -> Session: ...
