"""Selection policies: one module each behind :class:`Policy`; add one file and one registry line."""

from __future__ import annotations

from router.policies.affinity import Affinity, AffinityConfig
from router.policies.base import Policy, PolicyConfig, WorkerView
from router.policies.cache_aware import CacheAware, CacheAwareConfig
from router.policies.least_outstanding import LeastOutstanding
from router.policies.power_of_two import PowerOfTwo
from router.policies.round_robin import RoundRobin
from router.request_info import RequestInfo

POLICIES: dict[str, type[Policy]] = {
    LeastOutstanding.name: LeastOutstanding,
    RoundRobin.name: RoundRobin,
    PowerOfTwo.name: PowerOfTwo,
    Affinity.name: Affinity,
    CacheAware.name: CacheAware,
}


def create_policy(name: str, settings: object | None = None) -> Policy:
    """The policy ``name`` with its own settings read from the router ``settings`` (its defaults without)."""
    cls = POLICIES[name]
    return cls(cls.config_from(settings) if settings is not None else None)


__all__ = ["POLICIES", "AffinityConfig", "CacheAwareConfig", "Policy", "PolicyConfig", "RequestInfo", "WorkerView",
           "create_policy"]
