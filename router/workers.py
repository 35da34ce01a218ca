"""Worker state the router keeps: readiness, in-flight requests, consecutive failures."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class Worker:
    url: str
    ready: bool = False  # last active probe (or a passive failure) decides
    in_flight: int = 0
    failures: int = 0  # consecutive, reset by a success

    def mark_failed(self) -> None:
        """A connection-level failure takes the worker out until a probe says it is ready again."""
        self.failures += 1
        self.ready = False

    def mark_ok(self) -> None:
        self.failures = 0


class WorkerPool:
    def __init__(self, urls: list[str]):
        self.workers = [Worker(u) for u in urls]

    def ready(self, exclude: set[Worker] | frozenset[Worker] = frozenset()) -> list[Worker]:
        return [w for w in self.workers if w.ready and w not in exclude]
