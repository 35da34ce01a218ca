"""Parsers of judge output (specs/fapo-judge.md). Nothing is ever evaluated as code."""

from __future__ import annotations

import re

from trainer_client.math_rule import last_boxed

_INTEGER = re.compile(r"[+-]?\d+")


def parse_step_index(text: str) -> int | None:
    """The FAPO judge's earliest-error index from its last ``\\boxed{}``; None if absent or not an integer."""
    content = last_boxed(text)
    if content is None or not _INTEGER.fullmatch(content.strip()):
        return None
    return int(content.strip())


def parse_verdict(text: str) -> bool | None:
    """Verdict judge: True iff the last box holds exactly ``True``; None when there is no box."""
    content = last_boxed(text)
    return None if content is None else content == "True"
