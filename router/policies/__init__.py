"""Selection policies: one module each behind :class:`Policy`; add one file and one registry line."""

from __future__ import annotations

from router.policies.affinity import Affinity
from router.policies.base import Policy, PolicyConfig
from router.policies.cache_aware import CacheAware
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


def create_policy(name: str, config: PolicyConfig | None = None) -> Policy:
    return POLICIES[name](config)


__all__ = ["POLICIES", "Policy", "PolicyConfig", "RequestInfo", "create_policy"]
