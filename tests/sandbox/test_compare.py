"""specs/code-rule.md §3: token-wise stdout and JSON return values, floats within the tolerance."""

from __future__ import annotations

import pytest

from services.sandbox.compare import return_matches, stdout_matches, values_equal

TOL = 1e-6


@pytest.mark.parametrize("got", ["1 2\n3\n", "1  2\n3", "1 2 3", "1\r\n2\r\n3\r\n", "  1\t2\n\n3   \n"])
def test_whitespace_does_not_matter(got: str) -> None:
    assert stdout_matches(got, "1 2\n3\n", TOL)


@pytest.mark.parametrize("got", ["1 2", "1 2 3 4", "1 23", "1 2 x", "", "1\u00a02 3"])
def test_tokens_must_match(got: str) -> None:
    assert not stdout_matches(got, "1 2 3", TOL)


def test_two_floats_on_one_line_within_the_tolerance_absolute_or_relative() -> None:
    assert stdout_matches("0.3333333 0.6666667\n", "0.333333 0.666667", TOL)
    assert stdout_matches("123456789.5", "123456789.6", TOL)  # relative
    assert stdout_matches("1e-9", "0", TOL)  # absolute
    assert stdout_matches("2", "2.0000000001", TOL)
    assert not stdout_matches("0.333 0.667", "0.333333 0.666667", TOL)
    assert stdout_matches("0.333 0.667", "0.333333 0.666667", 1e-2)


def test_integers_are_exact_even_where_the_relative_tolerance_would_accept_them() -> None:
    # The spec's letter ("both parse as floats ... relatively") would make these equal: a wrong answer to
    # every problem with answers over 10**6 would pass. Integers compare as text.
    assert not stdout_matches("1000001", "1000000", TOL)
    assert not stdout_matches("12345678901234567891", "12345678901234567890", TOL)
    assert not values_equal(1000001, 1000000, TOL)
    assert stdout_matches("1000000.0", "1000000", TOL)


@pytest.mark.parametrize(("got", "want"), [("nan", "nan"), ("inf", "inf")])
def test_non_finite_tokens_only_match_as_text(got: str, want: str) -> None:
    assert stdout_matches(got, want, TOL)
    assert not stdout_matches("1e999", "2e999", TOL)
    assert not stdout_matches("1_000.0", "1000.0", TOL)


def test_return_values_json_normalised_floats_nested() -> None:
    assert values_equal([1, [2.0000001, {"a": "x"}]], [1, [2.0, {"a": "x"}]], TOL)
    assert not values_equal([1, 2], [1, 2, 3], TOL)
    assert not values_equal({"a": 1}, {"a": 1, "b": 2}, TOL)
    assert not values_equal("1", 1, TOL)
    assert not values_equal(None, [], TOL)
    assert values_equal(10**400, 10**400, TOL) and not values_equal(10**400, 1.0, TOL)


def test_booleans_are_not_numbers() -> None:
    assert not values_equal(1, True, TOL)
    assert not values_equal(0.0, False, TOL)
    assert values_equal(True, True, TOL)


def test_the_apps_one_element_wrap_is_accepted_in_the_apps_form_only() -> None:
    assert return_matches(5, [5], TOL, apps_form=True)
    assert return_matches([5], [5], TOL, apps_form=True)
    assert return_matches([1, 2], [[1, 2]], TOL, apps_form=True)
    assert not return_matches(5, [5], TOL, apps_form=False)
    assert not return_matches(5, [5, 5], TOL, apps_form=True)
