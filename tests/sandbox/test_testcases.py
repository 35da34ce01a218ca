"""specs/code-rule.md §2: the test-case forms, and a precise request error for every malformed one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.sandbox.input_error import CodeInputError
from services.sandbox.testcases import parse_tests


def test_stdio_from_an_object_or_a_json_string() -> None:
    gt = {"inputs": ["1 2\n", ["3 4", "5"]], "outputs": ["3\n", ["7", "5"]]}
    for form in (gt, json.dumps(gt)):
        tests = parse_tests(form)
        assert tests.kind == "stdio"
        assert [(c.input, c.expected) for c in tests.cases] == [("1 2\n", "3\n"), ("3 4\n5", "7\n5")]


def test_livecodebench_form_one_json_value_per_line() -> None:
    tests = parse_tests({"fn_name": "f", "inputs": ['[1, 2]\n"a"\n', "3"], "outputs": ["[3]", '"x"']})
    assert tests.kind == "call" and tests.fn_name == "f"
    assert [(c.input, c.expected, c.apps_form) for c in tests.cases] == [([[1, 2], "a"], [3], False),
                                                                         ([3], "x", False)]


def test_apps_form_a_list_of_arguments() -> None:
    tests = parse_tests(json.dumps({"fn_name": "f", "inputs": [[1, 2], [[3]]], "outputs": [[3], 3]}))
    assert [(c.input, c.expected, c.apps_form) for c in tests.cases] == [([1, 2], [3], True), ([[3]], 3, True)]


def test_assert_cases_and_the_language_key() -> None:
    tests = parse_tests({"assert_case": ["assert f(1) == 2", "assert f(2) == 3"], "language": "python"})
    assert tests.kind == "assert" and [c.input for c in tests.cases] == ["assert f(1) == 2", "assert f(2) == 3"]
    assert tests.language == "python"


def test_max_tests_keeps_the_first_ones() -> None:
    tests = parse_tests({"inputs": ["1", "2", "3"], "outputs": ["1", "2", "3"]}, max_tests=2)
    assert [c.input for c in tests.cases] == ["1", "2"]
    assert len(parse_tests({"assert_case": ["assert 1", "assert 2"]}, max_tests=1).cases) == 1


@pytest.mark.parametrize(("gt", "param", "words"), [
    (None, "ground_truth", "required"),
    ("{not json", "ground_truth", "not valid JSON"),
    ("[1, 2]", "ground_truth", "must be a JSON object"),
    ({"outputs": ["1"]}, "ground_truth.inputs", "no 'inputs'"),
    ({"inputs": ["1"]}, "ground_truth.outputs", "no 'outputs'"),
    ({"inputs": "1", "outputs": ["1"]}, "ground_truth.inputs", "must be a list"),
    ({"inputs": [], "outputs": []}, "ground_truth.inputs", "empty"),
    ({"inputs": ["1", "2"], "outputs": ["1"]}, "ground_truth.outputs", "2 inputs but 1 outputs"),
    ({"inputs": ["1", {"a": 1}], "outputs": ["1", "2"]}, "ground_truth.inputs", "inputs[1]"),
    ({"inputs": ["1", "2"], "outputs": ["1", None]}, "ground_truth.outputs", "outputs[1]"),
    ({"fn_name": "f", "inputs": ["1", "1\n[2,"], "outputs": ["1", "2"]}, "ground_truth.inputs", "inputs[1] line 2"),
    ({"fn_name": "f", "inputs": ["1"], "outputs": ["[1,"]}, "ground_truth.outputs", "outputs[0]"),
    ({"fn_name": "f", "inputs": [3], "outputs": ["1"]}, "ground_truth.inputs", "inputs[0]"),
    ({"fn_name": "1f", "inputs": ["1"], "outputs": ["1"]}, "ground_truth.fn_name", "function name"),
    ({"fn_name": "", "inputs": ["1"], "outputs": ["1"]}, "ground_truth.fn_name", "function name"),
    ({"assert_case": []}, "ground_truth.assert_case", "non-empty list"),
    ({"assert_case": ["assert f(1)", 3]}, "ground_truth.assert_case", "assert_case[1]"),
    ({"assert_case": ["assert f(1) =="]}, "ground_truth.assert_case", "assert_case[0] is not valid Python"),
    ({"assert_case": ["assert 1"], "inputs": [""], "outputs": [""]}, "ground_truth.assert_case", "both"),
])
def test_malformed_test_cases_name_what_is_wrong(gt: Any, param: str, words: str) -> None:
    with pytest.raises(CodeInputError) as err:
        parse_tests(gt)
    assert err.value.param == param
    assert words in err.value.message


@pytest.mark.parametrize("max_tests", [0, -1, True, 1.5])
def test_max_tests_must_be_a_positive_integer(max_tests: Any) -> None:
    with pytest.raises(CodeInputError) as err:
        parse_tests({"inputs": ["1"], "outputs": ["1"]}, max_tests=max_tests)
    assert err.value.param == "max_tests"
