"""One test's status from its raw run (specs/code-rule.md §3-§4): the sandbox's outcome, then the comparison
with the expected output, which happens here, outside the sandbox."""

from __future__ import annotations

import json
from typing import Literal

from services.sandbox.compare import return_matches, stdout_matches
from services.sandbox.harness import read_mark
from services.sandbox.session import RawRun
from services.sandbox.testcases import TestCase

TestStatus = Literal["passed", "wrong_answer", "runtime_error", "timeout", "memory_limit", "output_limit",
                     "compile_error"]
_LIMITS = frozenset({"timeout", "memory_limit", "output_limit", "compile_error"})


def stdio_verdict(run: RawRun, case: TestCase, tolerance: float) -> TestStatus:
    """Exit 0 within the limits, and the tokens of stdout match; a non-zero exit after right output fails."""
    if run.status != "ok":
        return run.status
    return "passed" if stdout_matches(run.stdout, case.expected, tolerance) else "wrong_answer"


def call_verdict(run: RawRun, case: TestCase, nonce: str, tolerance: float) -> TestStatus:
    """The harness's ``return`` line holds the JSON return value; no line means the program ended without
    returning (an exit inside the function, a crash), which is a runtime error."""
    mark = read_mark(run.stdout, nonce)
    if run.status in _LIMITS:
        return run.status
    if mark is not None and mark[0] == "compile_error":
        return "compile_error"
    if run.status != "ok" or mark is None:
        return "runtime_error"
    kind, payload = mark
    if kind == "unserializable":
        return "wrong_answer"  # a set, an object...: no JSON value equals the expected one
    if kind != "return":
        return "runtime_error"
    try:
        value = json.loads(payload)
    except ValueError:  # the line was torn by the solution's own writes on the harness's descriptor
        return "runtime_error"
    return "passed" if return_matches(value, case.expected, tolerance, case.apps_form) else "wrong_answer"


def assert_verdict(run: RawRun, nonce: str) -> TestStatus:
    """Passed only with exit 0 AND the harness's ``passed`` mark, written after the assertions ran; a failed
    assertion is a wrong answer, any other error or an early exit a runtime error."""
    mark = read_mark(run.stdout, nonce)
    if run.status in _LIMITS:
        return run.status
    kind = mark[0] if mark is not None else None
    if kind == "compile_error":
        return "compile_error"
    if run.status == "ok" and kind == "passed":
        return "passed"
    return "wrong_answer" if kind == "failed" else "runtime_error"
