"""The policy interface: given the eligible workers and the request, pick one. Nothing else.

Policies see a worker only through :class:`WorkerView` (``url``, ``in_flight``, ``load``, ``shared``, ``slowness``), as
sgl's ``Worker`` trait and Ray Serve's ``RunningReplica`` do, and the request through the lazily parsed
:class:`~router.request_info.RequestInfo`. The router passes only available workers, never an empty list, and
owns all in-flight accounting. A policy with knobs declares them as its own ``Config``; each becomes the router
setting ``<settings_prefix><field>`` (flag, env var, YAML, Helm value), see ``router/settings.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from router.request_info import RequestInfo


class WorkerView(Protocol):
    """What a policy may read of a worker."""

    url: str  # a stable identity (the ring and the cache trees key on it)
    in_flight: int  # this router's requests on it
    load: float  # requests it reports holding in all (other router replicas' too), averaged over seconds; 0: none
    shared: bool  # other router replicas send it a real share of its requests
    slowness: float  # > 1 for a straggler: its load weighs this much more


W = TypeVar("W", bound=WorkerView)


class PolicyConfig(BaseModel):
    """Base of a policy's own settings (none by default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Policy(abc.ABC):
    name: ClassVar[str]
    Config: ClassVar[type[PolicyConfig]] = PolicyConfig
    settings_prefix: ClassVar[str] = ""  # its settings are the router settings named prefix + field

    def __init__(self, config: PolicyConfig | None = None):
        self.config: Any = config if config is not None else self.Config()
        self.spills = 0  # requests not sent to the preferred worker (affinity/cache_aware)
        self.decisions = 0

    @classmethod
    def config_from(cls, settings: object) -> PolicyConfig:
        """This policy's config read from the router settings."""
        return cls.Config(**{name: getattr(settings, cls.settings_prefix + name) for name in cls.Config.model_fields})

    @abc.abstractmethod
    def select(self, workers: Sequence[W], request: RequestInfo) -> W:
        """Return one of ``workers`` (never empty)."""
