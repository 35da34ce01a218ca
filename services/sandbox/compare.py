"""When an output is right (specs/code-rule.md §3): token-wise stdout (``wcmp``) and JSON return values, with a
float tolerance, absolute or relative (``math.isclose`` with both set to it).

Two integers are compared exactly: the tolerance applies when at least one side is a non-integer number, so
``1000000`` never equals ``1000001`` (a literal reading of the spec's relative tolerance would accept it).
"""

from __future__ import annotations

import math
import re
from typing import Any

_SPACE = re.compile(r"[ \t\n\r\f\v]+")  # ASCII whitespace, as wcmp: a no-break space is part of a token
_INTEGER = re.compile(r"[+-]?\d+\Z", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)  # no nan/inf/_/hex


def stdout_matches(stdout: str, expected: str, tolerance: float) -> bool:
    """Whitespace-separated token sequences equal: line breaks, CRLF, repeated and trailing spaces don't matter."""
    got, want = _tokens(stdout), _tokens(expected)
    if len(got) != len(want):
        return False
    return all(g == w or _tokens_close(g, w, tolerance) for g, w in zip(got, want, strict=True))


def _tokens(text: str) -> list[str]:
    return [token for token in _SPACE.split(text) if token]


def _tokens_close(got: str, want: str, tolerance: float) -> bool:
    if _INTEGER.match(got) and _INTEGER.match(want):
        return False  # two integers: exact text only (already compared), never a tolerance
    if not (_DECIMAL.match(got) and _DECIMAL.match(want)):
        return False
    a, b = float(got), float(want)  # "1e999" is inf: only finite floats get the tolerance
    return math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def _numbers_close(got: float, want: float, tolerance: float) -> bool:
    try:
        a, b = float(got), float(want)
    except OverflowError:  # an integer past float range: only an exact match
        return got == want
    if math.isfinite(a) and math.isfinite(b):
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    return a == b


def return_matches(got: Any, want: Any, tolerance: float, apps_form: bool = False) -> bool:
    """A call's JSON-normalised return value equals the expected one; in the APPS/TACO form a one-element list
    wrapping the value is accepted as well (as APPS does)."""
    if values_equal(got, want, tolerance):
        return True
    return apps_form and isinstance(want, list) and len(want) == 1 and values_equal(got, want[0], tolerance)


def values_equal(got: Any, want: Any, tolerance: float) -> bool:
    """JSON value equality, recursively: booleans are not numbers, integers are exact, floats within tolerance."""
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        if isinstance(got, int) and isinstance(want, int):
            return got == want
        return _numbers_close(got, want, tolerance)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(values_equal(g, w, tolerance) for g, w in zip(got, want, strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(values_equal(got[k], want[k], tolerance) for k in got)
    return type(got) is type(want) and got == want
