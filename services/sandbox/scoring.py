"""The code rule's score of one sample (specs/code-rule.md §4): extract the code, parse the tests, run them in
parallel on one session, and summarise with the fixed keys.

``tests_total`` is the number of tests the sample is scored on (all of them, or the first ``max_tests``): the
spec's "tests run". It does not shrink when binary scoring stops early, so ``pass_rate`` keeps one denominator
per ground truth. Binary scoring cancels the tests after the first failure but lets the earlier ones finish,
so the status is the first failing test by index and ``tests_passed`` the passing prefix before it: both are
the same on every run. A compile error fails every test alike; nothing else is run then.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal

from services.sandbox.extract import extract_code, resolve_language
from services.sandbox.harness import assert_harness, assert_stdin, call_harness, call_stdin
from services.sandbox.input_error import CodeInputError
from services.sandbox.session import Limits, Session, SessionFactory
from services.sandbox.testcases import TestCase, TestSet, parse_tests
from services.sandbox.verdict import TestStatus, assert_verdict, call_verdict, stdio_verdict

Status = Literal["passed", "wrong_answer", "runtime_error", "timeout", "memory_limit", "output_limit",
                 "compile_error", "no_code"]
Scoring = Literal["continuous", "binary"]
KEYS = ("score", "acc", "pass_rate", "tests_passed", "tests_total", "status")
_closing: set[asyncio.Task[None]] = set()  # session closes that outlive a cancelled caller


@dataclass(frozen=True)
class CodeResult:
    score: float
    acc: bool  # every test run passed
    pass_rate: float
    tests_passed: int
    tests_total: int
    status: Status

    def to_dict(self) -> dict[str, Any]:
        """Exactly the fixed keys, for every sample."""
        return asdict(self)


async def score_code(factory: SessionFactory, text: str, ground_truth: Any, *, language: str | None = None,
                     scoring: Scoring = "continuous", max_tests: int | None = None, float_tolerance: float = 1e-6,
                     limits: Limits | None = None) -> CodeResult:
    """Score ``text`` against ``ground_truth``. ``language`` is ``extra_info.language`` (None: the ground
    truth's, else python). Raises CodeInputError for a bad request; SandboxFailure and SandboxBusy propagate
    (never a score)."""
    if scoring not in ("continuous", "binary"):
        raise CodeInputError(f"scoring must be 'continuous' or 'binary', got {scoring!r}", "scoring")
    if isinstance(float_tolerance, bool) or not isinstance(float_tolerance, (int, float)) or not (
            math.isfinite(float_tolerance) and float_tolerance >= 0):
        raise CodeInputError(f"float_tolerance must be a finite number >= 0, got {float_tolerance!r}",
                             "float_tolerance")
    tests = parse_tests(ground_truth, max_tests)
    lang = resolve_language(language, tests.language)
    if lang == "cpp" and tests.kind != "stdio":
        raise CodeInputError(f"C++ runs stdin/stdout tests only; these are {tests.kind} tests (python only)",
                             "language")
    total = len(tests.cases)
    code = extract_code(text, lang)
    if code is None:
        return _failed(total, "no_code")
    session = factory.open(lang, _program(code, tests), limits or Limits())
    try:
        if await session.prepare() is not None:
            return _failed(total, "compile_error")
        statuses = await _run_all(session, tests, scoring == "binary", float(float_tolerance))
    finally:
        await _close(session)
    return _summarise(statuses, scoring == "binary")


def _program(code: str, tests: TestSet) -> str:
    if tests.kind == "call":
        return call_harness(code, tests.fn_name or "")
    return assert_harness(code) if tests.kind == "assert" else code


async def _run_one(session: Session, tests: TestSet, case: TestCase, tolerance: float) -> TestStatus:
    if tests.kind == "stdio":
        return stdio_verdict(await session.run(case.input), case, tolerance)
    nonce = secrets.token_hex(12)
    if tests.kind == "call":
        return call_verdict(await session.run(call_stdin(nonce, case.input)), case, nonce, tolerance)
    return assert_verdict(await session.run(assert_stdin(nonce, case.input)), nonce)


async def _run_all(session: Session, tests: TestSet, binary: bool, tolerance: float) -> list[TestStatus | None]:
    """Every test at once (the sandbox bounds real parallelism); None for a test cancelled by an early stop."""
    statuses: list[TestStatus | None] = [None] * len(tests.cases)
    index = {asyncio.ensure_future(_run_one(session, tests, case, tolerance)): i
             for i, case in enumerate(tests.cases)}
    pending = set(index)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.cancelled():
                    continue
                i = index[task]
                status = statuses[i] = task.result()  # a SandboxFailure/SandboxBusy propagates from here
                if status == "compile_error" or (binary and status != "passed"):
                    stop_after = -1 if status == "compile_error" else i
                    for other in pending:
                        if index[other] > stop_after:
                            other.cancel()
    finally:
        for task in index:
            task.cancel()
        await asyncio.gather(*index, return_exceptions=True)  # runs unwound before the session closes
    if "compile_error" in statuses:
        return ["compile_error"] * len(statuses)
    return statuses


def _summarise(statuses: list[TestStatus | None], binary: bool) -> CodeResult:
    total = len(statuses)
    first_failure = next((i for i, s in enumerate(statuses) if s not in ("passed", None)), None)
    if first_failure is None:
        return CodeResult(1.0, True, 1.0, total, total, "passed")
    passed = first_failure if binary else sum(s == "passed" for s in statuses)
    score = 0.0 if binary else passed / total
    return CodeResult(score, False, passed / total, passed, total, statuses[first_failure] or "runtime_error")


def _failed(total: int, status: Status) -> CodeResult:
    return CodeResult(0.0, False, 0.0, 0, total, status)


async def _close(session: Session) -> None:
    """Close the session whatever happens: a cancelled caller leaves the close running to its end."""
    task = asyncio.ensure_future(session.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    await asyncio.shield(task)
