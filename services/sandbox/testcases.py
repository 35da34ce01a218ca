"""The test cases of a sample (specs/code-rule.md §2): stdin/stdout, call-based (two forms), or assertions.

The ground truth is a JSON object, or a JSON string of one (TACO/APPS keep it as a string). Anything missing
or malformed is a :class:`CodeInputError` naming the exact key and index: a broken label is the caller's
error, never a score of 0.
"""

from __future__ import annotations

import ast
import json
import keyword
from dataclasses import dataclass
from typing import Any, Literal

from services.sandbox.input_error import CodeInputError

TestKind = Literal["stdio", "call", "assert"]
PARAM = "ground_truth"


@dataclass(frozen=True)
class TestCase:
    """One test. stdio: ``input`` is the stdin text, ``expected`` the stdout text. call: ``input`` is the list
    of arguments, ``expected`` the return value (``apps_form``: a one-element list wrapping it also passes).
    assert: ``input`` is the Python source of the assertions, ``expected`` is None."""

    input: Any
    expected: Any = None
    apps_form: bool = False


@dataclass(frozen=True)
class TestSet:
    kind: TestKind
    cases: tuple[TestCase, ...]  # the tests run: the first ``max_tests`` when set
    fn_name: str | None = None
    language: Any = None  # the ground truth's own ``language`` key, if any (resolve_language checks it)


def parse_tests(ground_truth: Any, max_tests: int | None = None) -> TestSet:
    """The tests to run, cut to the first ``max_tests``. Only the kept tests' contents are parsed."""
    if max_tests is not None and (isinstance(max_tests, bool) or not isinstance(max_tests, int) or max_tests < 1):
        raise CodeInputError(f"max_tests must be a positive integer, got {max_tests!r}", "max_tests")
    spec = _load(ground_truth)
    language = spec.get("language")
    if "assert_case" in spec:
        return TestSet("assert", _assert_cases(spec, max_tests), language=language)
    inputs, outputs = _io_lists(spec)
    keep = len(inputs) if max_tests is None else min(max_tests, len(inputs))
    fn_name = spec.get("fn_name")
    if fn_name is None:
        cases = tuple(TestCase(_text(inputs[i], "inputs", i), _text(outputs[i], "outputs", i)) for i in range(keep))
        return TestSet("stdio", cases, language=language)
    if not isinstance(fn_name, str) or not fn_name.isidentifier() or keyword.iskeyword(fn_name):
        raise CodeInputError(f"{PARAM}.fn_name must be a Python function name, got {fn_name!r}", f"{PARAM}.fn_name")
    cases = tuple(_call_case(inputs[i], outputs[i], i) for i in range(keep))
    return TestSet("call", cases, fn_name=fn_name, language=language)


def _load(ground_truth: Any) -> dict[str, Any]:
    if ground_truth is None or ground_truth == "":
        raise CodeInputError(f"{PARAM} is required by the code recipe: a JSON object of test cases", PARAM)
    spec = ground_truth
    if isinstance(spec, (str, bytes)):
        try:
            spec = json.loads(spec)
        except ValueError as exc:
            raise CodeInputError(f"{PARAM} is not valid JSON: {exc}", PARAM) from None
    if not isinstance(spec, dict):
        raise CodeInputError(f"{PARAM} must be a JSON object of test cases, got {_kind(spec)}", PARAM)
    return spec


def _io_lists(spec: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    for key in ("inputs", "outputs"):
        if key not in spec:
            raise CodeInputError(f"{PARAM} has no '{key}': give inputs and outputs, or assert_case", f"{PARAM}.{key}")
        if not isinstance(spec[key], list):
            raise CodeInputError(f"{PARAM}.{key} must be a list, got {_kind(spec[key])}", f"{PARAM}.{key}")
    inputs, outputs = spec["inputs"], spec["outputs"]
    if not inputs:
        raise CodeInputError(f"{PARAM}.inputs is empty: there is no test to run", f"{PARAM}.inputs")
    if len(inputs) != len(outputs):
        raise CodeInputError(f"{PARAM} has {len(inputs)} inputs but {len(outputs)} outputs", f"{PARAM}.outputs")
    return inputs, outputs


def _text(value: Any, key: str, i: int) -> str:
    """A stdin or expected-stdout text: a string, a list of lines (joined), or a bare number."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "\n".join(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise CodeInputError(
        f"{PARAM}.{key}[{i}] must be a string or a list of lines, got {_kind(value)}", f"{PARAM}.{key}")


def _call_case(args: Any, expected: Any, i: int) -> TestCase:
    """LiveCodeBench form (a string of one JSON value per line; the output a JSON string) or APPS/TACO form
    (a list of arguments; the output the value, or a one-element list wrapping it)."""
    if isinstance(args, list):
        return TestCase(args, expected, apps_form=True)
    if not isinstance(args, str):
        raise CodeInputError(
            f"{PARAM}.inputs[{i}] must be a list of arguments or a string of JSON lines (one per argument), "
            f"got {_kind(args)}", f"{PARAM}.inputs")
    values = []
    for n, line in enumerate(args.split("\n"), 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except ValueError as exc:
            raise CodeInputError(f"{PARAM}.inputs[{i}] line {n} is not a JSON value (one argument per line): {exc}",
                                 f"{PARAM}.inputs") from None
    if isinstance(expected, str):
        try:
            expected = json.loads(expected)
        except ValueError as exc:
            raise CodeInputError(f"{PARAM}.outputs[{i}] is not the JSON text of a return value: {exc}",
                                 f"{PARAM}.outputs") from None
    return TestCase(values, expected)


def _assert_cases(spec: dict[str, Any], max_tests: int | None) -> tuple[TestCase, ...]:
    cases = spec["assert_case"]
    param = f"{PARAM}.assert_case"
    if "inputs" in spec or "outputs" in spec:
        raise CodeInputError(f"{PARAM} has both assert_case and inputs/outputs: give one form of test", param)
    if not isinstance(cases, list) or not cases:
        raise CodeInputError(f"{param} must be a non-empty list of Python sources, got {_kind(cases)}", param)
    kept = cases if max_tests is None else cases[:max_tests]
    for i, source in enumerate(kept):
        if not isinstance(source, str) or not source.strip():
            raise CodeInputError(f"{param}[{i}] must be Python source of assertions, got {_kind(source)}", param)
        try:
            ast.parse(source, f"<assert_case[{i}]>")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise CodeInputError(f"{param}[{i}] is not valid Python: {exc}", param) from None
    return tuple(TestCase(source) for source in kept)


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
