"""The policy interface: given the eligible workers and the request, pick one. Nothing else."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from router.workers import Worker


@dataclass
class RequestInfo:
    """What a policy may look at (kept small: the hot path builds one per request)."""

    path: str
    body: bytes
    headers: dict[str, str]


class Policy(abc.ABC):
    name: str

    @abc.abstractmethod
    def select(self, workers: Sequence[Worker], request: RequestInfo) -> Worker:
        """Return one of ``workers`` (never empty)."""
