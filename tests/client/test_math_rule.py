"""Table-driven tests of the math rule reward against shared/specs/math-rule.md (verl's ``math_dapo``).

Every expected value was worked out by hand from the spec, quirks included; ``\\n`` inside a case is a real newline.
"""

from __future__ import annotations

import dataclasses

import pytest

from trainer_client.math_rule import (
    INVALID,
    MODES,
    REMOVED_EXPRESSIONS,
    SUBSTITUTIONS,
    TAIL_CHARS,
    MathResult,
    compute_math,
    extract_answer,
    last_boxed,
    normalize,
)

# ---------------------------------------------------------------------------------------------
# Extraction: (id, solution, mode, raw extracted answer)

BOXED_EXTRACTION = [
    ("boxed_simple", r"so the answer is \boxed{42}.", "42"),
    ("boxed_nested", r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    ("boxed_deep_nested", r"\boxed{\sqrt{\frac{a}{b}}}", r"\sqrt{\frac{a}{b}}"),
    ("boxed_last_wins", r"\boxed{1} or rather \boxed{2}", "2"),
    ("boxed_inner_box_is_last", r"\boxed{\boxed{3}}", "3"),
    ("boxed_none", "the answer is 42", INVALID),
    ("boxed_unbalanced", r"\boxed{\frac{1}{2}", INVALID),
    ("boxed_unbalanced_last_no_fallback", r"\boxed{1} and \boxed{2", INVALID),
    ("boxed_empty", r"\boxed{}", ""),
    ("boxed_space_before_brace", r"\boxed {3}", INVALID),
    ("boxed_fbox_not_boxed", r"\fbox{3}", INVALID),
    ("boxed_escaped_braces_counted", r"\boxed{\{1,2\}}", r"\{1,2\}"),
    ("boxed_escaped_close_brace_closes", r"\boxed{\}", "\\"),
    ("boxed_extra_closers", r"\boxed{5}}}", "5"),
    ("boxed_multiline", "\\boxed{a\nb}", "a\nb"),
    ("boxed_ignores_answer_line", "Answer: 7", INVALID),
    ("tail_exactly_300", r"\boxed{7}" + "x" * 291, "7"),
    ("tail_301_cuts_backslash", r"\boxed{7}" + "x" * 292, INVALID),
    ("tail_far_box_unseen", r"\boxed{1}" + "x" * 400, INVALID),
    ("tail_box_opened_before_tail", r"\boxed{" + "x" * 400 + "}", INVALID),
    ("tail_counts_characters_not_bytes", r"\boxed{7}" + "é" * 291, "7"),
]

ANSWER_EXTRACTION = [
    ("answer_simple", "Answer: 42", "42"),
    ("answer_lowercase", "answer: 42", "42"),
    ("answer_uppercase", "ANSWER: 42", "42"),
    ("answer_mixed_case_no_space", "aNsWeR:7", "7"),
    ("answer_spaces_around_colon", "Answer  :   42", "42"),
    ("answer_keeps_trailing_spaces", "Answer: 42  ", "42  "),
    ("answer_stops_at_newline", "Answer: 5\nbecause it is", "5"),
    ("answer_last_line_wins", "Answer: 1\nAnswer: 2", "2"),
    ("answer_same_line_is_one_match", "Answer: 1 Answer: 2", "1 Answer: 2"),
    ("answer_inside_phrase", "The final answer: $5$", "$5$"),
    ("answer_newline_after_colon", "Answer:\n42", "42"),
    ("answer_only_a_space", "Answer: ", " "),
    ("answer_nothing_after_colon", "Answer:", INVALID),
    ("answer_plural_no_match", "Answers: 5", INVALID),
    ("answer_no_colon", "Answer 5", INVALID),
    ("answer_ignores_boxed", r"\boxed{5}", INVALID),
    ("answer_tail_exactly_300", "Answer: 5\n" + "x" * 290, "5"),
    ("answer_tail_cuts_keyword", "Answer: 5\n" + "x" * 291, INVALID),
    ("answer_out_of_tail", "Answer: 5\n" + "x" * 300, INVALID),
]

ANSWER_OR_BOXED_EXTRACTION = [
    ("aob_answer_preferred", "\\boxed{1}\nAnswer: 2", "2"),
    ("aob_answer_preferred_over_later_box", "Answer: 2\n\\boxed{1}", "2"),
    ("aob_falls_back_to_box", r"so \boxed{3}", "3"),
    ("aob_fallback_last_box", r"\boxed{3} no, \boxed{4}", "4"),
    ("aob_neither", "no answer here", INVALID),
    ("aob_unbalanced_box", r"\boxed{4", INVALID),
    ("aob_answer_line_holds_box", r"Answer: \boxed{4}", r"\boxed{4}"),
    ("aob_answer_out_of_tail_box_in_tail", "Answer: 1\n" + "x" * 300 + r"\boxed{2}", "2"),
]

EXTRACTION = (
    [(i, s, "boxed", e) for i, s, e in BOXED_EXTRACTION]
    + [(i, s, "answer", e) for i, s, e in ANSWER_EXTRACTION]
    + [(i, s, "answer_or_boxed", e) for i, s, e in ANSWER_OR_BOXED_EXTRACTION]
)


@pytest.mark.parametrize(("solution", "mode", "expected"), [c[1:] for c in EXTRACTION], ids=[c[0] for c in EXTRACTION])
def test_extract_answer(solution: str, mode: str, expected: str) -> None:
    assert extract_answer(solution, mode) == expected


LAST_BOXED = [
    ("lb_none", "no box at all", None),
    ("lb_simple", r"\boxed{a}", "a"),
    ("lb_nested", r"x \boxed{\frac{1}{2}} y", r"\frac{1}{2}"),
    ("lb_unbalanced", r"\boxed{a", None),
    ("lb_no_tail_applied", r"\boxed{1}" + "x" * 1000, "1"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in LAST_BOXED], ids=[c[0] for c in LAST_BOXED])
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_default_mode_is_boxed() -> None:
    assert extract_answer(r"\boxed{5}") == "5"
    assert extract_answer("Answer: 5") == INVALID
    assert compute_math("Answer: 5", "5") == MathResult(score=-1.0, acc=False, pred=INVALID)


@pytest.mark.parametrize("mode", ["Boxed", "strict", ""])
def test_unknown_mode_raises(mode: str) -> None:
    with pytest.raises(ValueError, match=r"boxed, answer, answer_or_boxed"):
        extract_answer(r"\boxed{1}", mode)
    with pytest.raises(ValueError, match=r"boxed, answer, answer_or_boxed"):
        compute_math(r"\boxed{1}", "1", mode)


# ---------------------------------------------------------------------------------------------
# Normalisation: (id, input, normalised)

NORM_LAST_EQUALS = [
    ("eq_keeps_after_last", "x = 3", "3"),
    ("eq_chain", "a=b=c", "c"),
    ("eq_trailing_is_empty", "x=", ""),
    ("eq_function", "f(x) = 2x + 1", "2x+1"),
]

NORM_SUBSTITUTIONS = [
    ("sub_an", "an apple", "apple"),
    ("sub_an_inside_word", "Logan 5", "Log5"),
    ("sub_a", "a dog", "dog"),
    ("sub_a_inside_word", "banana split", "banansplit"),
    ("sub_dot_dollar", "$5.$", "5"),
    ("sub_escaped_dollar", r"\$1,000", "1000"),
    ("sub_backslash_space", r"1\ 000", "1000"),
    ("sub_space", "1 2 3", "123"),
    ("sub_mbox_to_text", r"5\mbox{cm}", "5"),
    ("sub_comma_text_and", r"x,\text{and}y", "x,y"),
    ("sub_text_and", r"x \text{ and } y", "x,y"),
    ("sub_mbox_and", r"x,\mbox{ and }y", "x,y"),
    ("sub_text_m", r"5\text{ m}", "5"),
]

NORM_REMOVALS = [
    ("rm_square_feet", "25 square feet", "25"),
    ("rm_ways", "6 ways", "6"),
    ("rm_ways_inside_word", "always", "al"),
    ("rm_integers", "4 integers", "4"),
    ("rm_dollars", "5 dollars", "5"),
    ("rm_mph", "60 mph", "60"),
    ("rm_mph_inside_word", "triumph", "triu"),
    ("rm_inches", "12 inches", "12"),
    ("rm_hours", "3 hours", "3"),
    ("rm_km", "5 km", "5"),
    ("rm_units_in_text", r"7\text{ units}", "7"),
    ("rm_ldots", r"1,2,3,\ldots", "123"),
    ("rm_sue_inside_word", "pursue", "pur"),
    ("rm_points", "10 points", "10"),
    ("rm_minutes", "45 minutes", "45"),
    ("rm_digits", "4 digits", "4"),
    ("rm_cents", "25 cents", "25"),
    ("rm_degrees", "90 degrees", "90"),
    ("rm_cm", "10 cm", "10"),
    ("rm_gm", "5 gm", "5"),
    ("rm_pounds", "3 pounds", "3"),
    ("rm_meters_inside_word", "5 centimeters", "5centi"),
    ("rm_meals", "3 meals", "3"),
    ("rm_edges_inside_word", "hedges", "h"),
    ("rm_students", "30 students", "30"),
    ("rm_childrentickets", "5 children tickets", "5"),
    ("rm_multiples", "12 multiples", "12"),
    ("rm_text_s", r"5\text{s}", "5"),
    ("rm_text_dot", r"5\text{.}", "5"),
    ("rm_text_newline_s", "5\\text{\ns}", "5"),
    ("rm_text_backslash_n_s_is_not_newline", r"5\text{\ns}", r"5\ns"),
    ("rm_text_squared", r"10\text{ cm}^2", "10"),
    ("rm_text_cubed", r"8\text{ m}^3", "8"),
    ("rm_text_newline", "5\\text{\n}", "5"),
    ("rm_text_empty", r"5\text{ }", "5"),
    ("rm_mathrm_th", r"5\mathrm{th}", "5"),
    ("rm_circ", r"90^\circ", "90"),
    ("rm_circ_braced", r"90^{\circ}", "90"),
    ("rm_thin_space", r"1\;000", "1000"),
    ("rm_comma_negative_space", r"1,\!000", "1000"),
    ("rm_brace_comma", "1{,}000", "1000"),
    ("rm_double_quote", '"yes"', "yes"),
    ("rm_dots", r"x,\dots", "x,"),
]

NORM_REGEX = [
    ("re_dollar_pair", "x$y$z", "y"),
    ("re_dollar_first_pair_kept", "$1$ and $2$", "1"),
    ("re_dollar_display_math_empties", "$$5$$", ""),
    ("re_dollar_pair_per_line", "$1$\n$2$", "1\n2"),
    ("re_text_unwrap", r"\text{Monday}", "Monday"),
    ("re_text_non_greedy", r"\text{\frac{1}{2}}", r"\frac{1{2}}"),
    ("re_textbf_unwrap", r"\textbf{B}", "B"),
    ("re_overline_unwrap", r"0.\overline{3}", "0.3"),
    ("re_boxed_unwrap", r"\boxed{5}", "5"),
    ("re_boxed_greedy", r"\boxed{1}, \boxed{2}", r"1},\boxed{2"),
    ("re_frac_short", r"\frac12", r"\frac{1}{2}"),
    ("re_frac_braced_unchanged", r"\frac{1}{2}", r"\frac{1}{2}"),
    ("re_frac_half_braced", r"\frac1{2}", r"\frac{1}{{}2}"),
    ("re_frac_spaced", r"\frac 1 2", r"\frac{1}{2}"),
    ("re_dfrac_short", r"\dfrac12", r"\dfrac{1}{2}"),
    ("re_frac_every_occurrence", r"\frac12+\frac34", r"\frac{1}{2}+\frac{3}{4}"),
    ("re_sqrt_short", r"\sqrt2", r"\sqrt{2}"),
    ("re_sqrt_with_coefficient", r"2\sqrt3", r"2\sqrt{3}"),
    ("re_sqrt_braced_unchanged", r"\sqrt{2}", r"\sqrt{2}"),
    ("re_sqrt_index_quirk", r"\sqrt[3]{2}", r"\sqrt{[}3]{2}"),
]

NORM_TAIL_STEPS = [
    ("dollar_single_removed", "$5", "5"),
    ("comma_digits", "1,000,000", "1000000"),
    ("comma_decimal_kept", "1,000.5", "1,000.5"),
    ("comma_negative_kept", "-1,000", "-1,000"),
    ("comma_tuple_kept", "(1,2)", "(1,2)"),
    ("comma_alone_kept", ",", ","),
    ("strip_whitespace", "\t5\n", "5"),
    ("invalid_unchanged", INVALID, INVALID),
    ("empty_unchanged", "", ""),
]

NORMALIZATION = NORM_LAST_EQUALS + NORM_SUBSTITUTIONS + NORM_REMOVALS + NORM_REGEX + NORM_TAIL_STEPS


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in NORMALIZATION], ids=[c[0] for c in NORMALIZATION])
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_rule_tables_match_spec_order() -> None:
    assert SUBSTITUTIONS == (
        ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""),
        ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
    )  # fmt: skip
    assert REMOVED_EXPRESSIONS == (
        "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots",
        "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds",
        "meters", "meals", "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}",
        "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}",
        "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# End to end: (id, solution, ground truth, mode, pred, acc)

CONSEQUENCES = [
    ("c_frac12_equals_frac", r"\boxed{\frac12}", r"\frac{1}{2}", "boxed", r"\frac{1}{2}", True),
    ("c_dfrac_differs", r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", "boxed", r"\dfrac{1}{2}", False),
    ("c_decimal_differs_from_frac", r"\boxed{0.5}", r"\frac{1}{2}", "boxed", "0.5", False),
    ("c_brace_comma_thousands", r"\boxed{1{,}000}", "1000", "boxed", "1000", True),
    ("c_comma_thousands", r"\boxed{1,000}", "1000", "boxed", "1000", True),
    ("c_comma_space_list", r"\boxed{3, 5}", "35", "boxed", "35", True),
    ("c_comma_list", r"\boxed{3,5}", "35", "boxed", "35", True),
    ("c_comma_lists_equal", r"\boxed{3, 5}", "3,5", "boxed", "35", True),
    ("c_text_cm", r"\boxed{10\text{ cm}}", "10", "boxed", "10", True),
    ("c_equation", r"\boxed{x = 3}", "3", "boxed", "3", True),
    ("c_paren_choice_differs", r"\boxed{(B)}", "B", "boxed", "(B)", False),
    ("c_box_beyond_tail", r"\boxed{42}" + " and that is all." * 20, "42", "boxed", INVALID, False),
    ("c_two_boxes_last_wins", r"First \boxed{41}, corrected: \boxed{42}", "42", "boxed", "42", True),
]

END_TO_END = [
    ("e_answer_dollars", "Reasoning here.\nAnswer: $42$", "42", "answer", "42", True),
    ("e_answer_same_line", "Answer: 1 Answer: 2", "2", "answer", "1Answer:2", False),
    ("e_answer_units", "Answer: 5 dollars", "5", "answer", "5", True),
    ("e_answer_equation", "answer: x = 5", "5", "answer", "5", True),
    ("e_answer_wrong", "Answer: 6", "5", "answer", "6", False),
    ("e_answer_mode_ignores_box", r"\boxed{7}", "7", "answer", INVALID, False),
    ("e_gt_boxed_normalised", r"\boxed{5}", r"\boxed{5}", "boxed", "5", True),
    ("e_gt_dollars_normalised", r"\boxed{5}", "$5$", "boxed", "5", True),
    ("e_gt_frac_short_normalised", "x" * 2000 + r"\boxed{\frac{3}{4}}", r"\frac34", "boxed", r"\frac{3}{4}", True),
    ("e_case_sensitive", r"\boxed{b}", "B", "boxed", "b", False),
    ("e_invalid_vs_gt", "no box here", "5", "boxed", INVALID, False),
    ("e_invalid_matches_invalid_gt", "no box here", INVALID, "boxed", INVALID, True),
    ("e_empty_box_matches_empty_gt", r"\boxed{}", "", "boxed", "", True),
    ("e_display_math_quirk", r"\boxed{$$5$$}", "5", "boxed", "", False),
    ("e_aob_fallback", r"so \boxed{7}", "7", "answer_or_boxed", "7", True),
    ("e_aob_prefers_answer", "Answer: 8\n\\boxed{7}", "7", "answer_or_boxed", "8", False),
    ("e_aob_answer_holds_box", r"Answer: \boxed{7}", "7", "answer_or_boxed", "7", True),
    ("e_aob_neither", "I give up", "7", "answer_or_boxed", INVALID, False),
]

COMPUTE = CONSEQUENCES + END_TO_END


@pytest.mark.parametrize(
    ("solution", "ground_truth", "mode", "pred", "acc"), [c[1:] for c in COMPUTE], ids=[c[0] for c in COMPUTE]
)
def test_compute_math(solution: str, ground_truth: str, mode: str, pred: str, acc: bool) -> None:
    result = compute_math(solution, ground_truth, mode)
    assert result.pred == pred
    assert result.acc is acc
    assert result.score == (1.0 if acc else -1.0)
    assert type(result.score) is float
    assert result.to_dict() == {"score": 1.0 if acc else -1.0, "acc": acc, "pred": pred}


def test_constants() -> None:
    assert MODES == ("boxed", "answer", "answer_or_boxed")
    assert INVALID == "[INVALID]"
    assert TAIL_CHARS == 300


def test_result_is_frozen_and_serialises() -> None:
    result = MathResult(score=1.0, acc=True, pred="42")
    assert result.to_dict() == {"score": 1.0, "acc": True, "pred": "42"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = -1.0  # type: ignore[misc]
