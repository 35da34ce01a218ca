"""Functions a CPU-pool test runs in a worker process (importable there: workers are spawned, not forked)."""

from __future__ import annotations

MARK = "as imported"  # a test changes it in its own process: a spawned worker imports the module afresh


def mark() -> str:
    return MARK
