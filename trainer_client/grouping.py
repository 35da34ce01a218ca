"""The GRPO group rule: which reward samples belong together, so a group's prompt is prefilled once.

A sample's group key is ``g:<group_id>`` when it has one, else ``p:`` and the first characters of its question,
else none (the sample is a group of its own). The client chunks a batch by it, the router's fan-out and the Ray
Serve ingress split a batch by it, and the affinity policy hashes it: one rule, so all of them agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The wire names of a sample's question, in the order ``RewardRequest.question`` accepts them.
QUESTION_FIELDS: tuple[str, ...] = ("question", "prompt", "problem")
PREFIX_CHARS = 256  # question characters that name a group without a group id


def question_of(sample: Mapping[str, Any]) -> str | None:
    """The sample's question under any of its wire names (the first non-empty text), else None."""
    for name in QUESTION_FIELDS:
        value = sample.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def group_key(sample: Any, index: int | None = None, prefix_chars: int = PREFIX_CHARS) -> str:
    """``g:<group_id>``, else ``p:<question prefix>``; else ``i:<index>`` (a group of its own), or ``""`` without
    an index. A sample that is not an object has no key (the server says what is wrong with it)."""
    if isinstance(sample, Mapping):
        group = sample.get("group_id")
        if group is not None:
            return f"g:{group}"
        question = question_of(sample)
        if question is not None:
            return "p:" + question[:prefix_chars]
    return "" if index is None else f"i:{index}"
