"""Selection policies: one module each behind :class:`Policy`; add one file and one registry line."""

from __future__ import annotations

from router.policies.base import Policy, RequestInfo
from router.policies.least_outstanding import LeastOutstanding

POLICIES: dict[str, type[Policy]] = {
    LeastOutstanding.name: LeastOutstanding,
}


def create_policy(name: str) -> Policy:
    return POLICIES[name]()


__all__ = ["POLICIES", "Policy", "RequestInfo", "create_policy"]
