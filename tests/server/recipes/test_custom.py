"""services/genrm_server/recipes/custom.py: custom recipes from a YAML file: loading and its error messages,
template filling, parsers and mappings (pure Python), then end to end on a real server process with the scripted
judge behind the openai engine."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.genrm_server.recipes.custom import (
    BUILTIN_RECIPE_NAMES,
    CustomRecipe,
    CustomRecipeSpec,
    LastBoxedParser,
    NumberMapping,
    RegexParser,
    TableMapping,
    fill_template,
    load_custom_recipes,
    template_fields,
)
from services.local_stack import Child, StackError, free_port, spawn, wait_ready
from tests.conftest import start_server

QUESTION = "What is 2 + 2?"
GATED_KEYS = {"score", "acc", "pred", "parsed", "judge_ok", "judge_asked"}
PLAIN_KEYS = {"score", "parsed", "judge_ok", "judge_asked"}

GATED_TEMPLATE = (
    "[Question]\n{question}\n[Reference]\n{ground_truth}\n[Solution]\n{solution}\n"
    "Is the solution correct? Put True or False in \\boxed{}, e.g. \\boxed{True}."
)
RECIPES_YAML = textwrap.dedent("""\
    recipes:
      - name: gated_verdict
        description: Math rule first; the judge confirms correct answers with \\boxed{True} or \\boxed{False}.
        template: |-
          [Question]
          {question}
          [Reference]
          {ground_truth}
          [Solution]
          {solution}
          Is the solution correct? Put True or False in \\boxed{}, e.g. \\boxed{True}.
        max_tokens: 64
        temperature: 0.0
        parser: {type: last_boxed}
        mapping: {type: table, values: {"True": 1.0, "False": 0.0}, default: 0.0}
        failure_score: 0.5
        gate: {math: {mode: boxed, when: correct}}
        skip_splits: [test]
      - name: regex_score
        description: The judge grades the solution from 0 to 10 and ends with "Score N".
        template: "Grade {solution} for {question} (rubric: {extra_info.rubric})."
        parser: {type: regex, pattern: 'Score: (\\d+)', group: 1}
        mapping: {type: number}
        failure_score: -1.0
      - name: wrong_only
        description: The judge explains only wrong answers; its boxed score replaces the rule's.
        template: "Why is {solution} wrong for {question}? Score in \\boxed{}."
        parser: {type: last_boxed}
        mapping: {type: number}
        gate: {math: {mode: boxed, when: incorrect}}
        overlong: {max_resp_len: 100, buffer_len: 20, penalty_factor: 1.0}
    """)


def _spec(**overrides: Any) -> dict[str, Any]:
    """A valid recipe spec as a dict, with ``overrides`` applied (``None`` removes a field)."""
    spec: dict[str, Any] = {
        "name": "my_judge", "description": "A test recipe.", "template": "Q: {question}\nA: {solution}",
        "parser": {"type": "last_boxed"}, "mapping": {"type": "table", "values": {"True": 1.0, "False": 0.0}},
    }
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}


def _write(tmp_path: Path, *specs: dict[str, Any]) -> Path:
    """A recipes file holding ``specs``."""
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump({"recipes": list(specs)}, sort_keys=False))
    return path


def _load_error(path: Path) -> str:
    """The ValueError message of loading ``path``."""
    with pytest.raises(ValueError) as info:
        load_custom_recipes(path)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# (1) Loading and validation


def test_a_valid_file_loads_into_listable_recipes(tmp_path):
    path = tmp_path / "recipes.yaml"
    path.write_text(RECIPES_YAML)
    gated, regex, wrong_only = load_custom_recipes(path)
    assert (gated.name, regex.name, wrong_only.name) == ("gated_verdict", "regex_score", "wrong_only")
    assert wrong_only.keys[-1] == "overlong_penalty" and wrong_only.overlong.buffer_len == 20
    assert gated.description.startswith("Math rule first") and gated.uses_judge and regex.uses_judge
    assert gated.keys == ("acc", "pred", "parsed", "judge_ok", "judge_asked")
    assert gated.log_keys == ("acc", "judge_ok", "judge_asked")
    assert regex.keys == ("parsed", "judge_ok", "judge_asked") and regex.log_keys == ("judge_ok", "judge_asked")
    assert gated.spec.template == GATED_TEMPLATE
    assert regex.settings()["parser"] == {"type": "regex", "pattern": "Score: (\\d+)", "group": 1}
    assert gated.settings() == {
        "name": "gated_verdict", "description": gated.description, "template": GATED_TEMPLATE, "max_tokens": 64,
        "temperature": 0.0, "parser": {"type": "last_boxed"},
        "mapping": {"type": "table", "values": {"True": 1.0, "False": 0.0}, "default": 0.0}, "failure_score": 0.5,
        "gate": {"math": {"mode": "boxed", "when": "correct"}}, "skip_splits": ["test"], "overlong": None,
    }
    assert (gated.extra_keys, regex.extra_keys) == (("split",), ("rubric",))  # the judge-result cache key


def test_defaults_and_an_empty_list(tmp_path):
    (recipe,) = load_custom_recipes(_write(tmp_path, _spec()))
    assert recipe.spec.max_tokens == 4096 and recipe.spec.temperature is None and recipe.spec.failure_score == 0.0
    assert recipe.spec.gate is None and recipe.spec.skip_splits == [] and recipe.extra_keys == ()
    empty = tmp_path / "empty.yaml"
    empty.write_text("recipes: []\n")
    assert load_custom_recipes(empty) == []


def test_missing_field_names_file_recipe_and_field(tmp_path):
    path = _write(tmp_path, _spec(), _spec(name="second", template=None))
    message = _load_error(path)
    assert str(path) in message and "recipe 1 ('second')" in message
    assert "field 'template': Field required" in message


@pytest.mark.parametrize("field", ["questoin", "problem", "extra_info", "extra_info.a.b", "Solution"])
def test_unknown_template_field_is_named(tmp_path, field):
    message = _load_error(_write(tmp_path, _spec(template=f"Q: {{question}} and {{{field}}}")))
    assert str(tmp_path) in message and "recipe 0 ('my_judge')" in message
    assert f"field 'template': unknown template field {{{field}}}" in message


def test_invalid_regex_names_recipe_and_field(tmp_path):
    message = _load_error(_write(tmp_path, _spec(parser={"type": "regex", "pattern": "Score: (\\d+"})))
    assert "recipe 0 ('my_judge')" in message and "field 'parser.pattern': invalid regular expression" in message


@pytest.mark.parametrize("group", [2, "score"])
def test_regex_group_must_exist(tmp_path, group):
    message = _load_error(_write(tmp_path, _spec(parser={"type": "regex", "pattern": "Score: (\\d+)",
                                                         "group": group})))
    assert "field 'parser': group: pattern" in message and f"has no group {group!r}" in message


def test_duplicate_name_is_an_error(tmp_path):
    message = _load_error(_write(tmp_path, _spec(), _spec(name="other"), _spec()))
    assert "recipe 2 ('my_judge'): field 'name': duplicate recipe name 'my_judge'" in message
    assert "already used by recipe 0" in message


@pytest.mark.parametrize("name", BUILTIN_RECIPE_NAMES)
def test_builtin_names_are_reserved(tmp_path, name):
    message = _load_error(_write(tmp_path, _spec(name=name)))
    assert f"recipe 0 ('{name}'): field 'name': name '{name}' is a built-in recipe" in message


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("recipes:\n  - name: x\n    template: [unclosed\n")
    message = _load_error(path)
    assert message.startswith(f"custom recipes file {path}: invalid YAML")


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    assert _load_error(path).startswith(f"custom recipes file {path}: cannot be read")


@pytest.mark.parametrize(("text", "expected"), [
    ("", "expected a mapping with exactly one key, 'recipes' (a list of recipes); got an empty document"),
    ("- name: x\n", "expected a mapping with exactly one key, 'recipes' (a list of recipes); got a list"),
    ("recipe: []\n", "got a mapping with keys ['recipe']"),
    ("recipes: {name: x}\n", "field 'recipes' must be a list, got a mapping with keys ['name']"),
    ("recipes: [just a string]\n", "recipe 0: expected a mapping of recipe fields, got str"),
])
def test_wrong_file_shape(tmp_path, text, expected):
    path = tmp_path / "shape.yaml"
    path.write_text(text)
    message = _load_error(path)
    assert str(path) in message and expected in message


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"max_token": 10}, "field 'max_token': Extra inputs are not permitted"),
    ({"max_tokens": 0}, "field 'max_tokens': Input should be greater than or equal to 1"),
    ({"temperature": 3}, "field 'temperature'"),
    ({"name": "my judge"}, "field 'name': String should match pattern"),
    ({"parser": {"type": "json"}}, "field 'parser': Input tag 'json'"),
    ({"parser": {"type": "regex"}}, "field 'parser.pattern': Field required"),
    ({"mapping": {"type": "table", "values": {}}}, "field 'mapping.values'"),
    ({"mapping": {"type": "number", "values": {"a": 1}}}, "field 'mapping.values': Extra inputs are not permitted"),
    ({"gate": {"math": {"when": "sometimes"}}}, "field 'gate.math.when'"),
    ({"gate": {"math": {"mode": "math_verify"}}}, "field 'gate.math.mode'"),
    ({"failure_score": "low"}, "field 'failure_score'"),
    ({"failure_score": float("nan")}, "field 'failure_score': Input should be a finite number"),
    ({"mapping": {"type": "table", "values": {"True": float("inf")}}}, "field 'mapping.values.True': Input should"),
    ({"mapping": {"type": "table", "values": {True: 1.0}}}, "field 'mapping.values': keys must be strings: quote True"),
])
def test_bad_field_is_named(tmp_path, overrides, expected):
    message = _load_error(_write(tmp_path, _spec(**overrides)))
    assert str(tmp_path) in message and "recipe 0 (" in message and expected in message


def test_every_bad_field_of_a_recipe_is_listed(tmp_path):
    message = _load_error(_write(tmp_path, _spec(template="{x}", mapping={"type": "nope"})))
    assert "field 'template'" in message and "field 'mapping'" in message


# ---------------------------------------------------------------------------------------------
# (2) Templates, parsers and mappings


def test_fill_is_single_pass_and_injection_safe():
    template = "Q: {question}\nGT: {ground_truth}\nA: {solution}"
    values = {"question": "{solution}", "ground_truth": "4", "solution": "{ground_truth} {question} {extra_info.x}"}
    assert fill_template(template, values) == "Q: {solution}\nGT: 4\nA: {ground_truth} {question} {extra_info.x}"


def test_latex_braces_and_escapes_stay_literal():
    template = "{solution} \\boxed{} \\boxed{True} \\boxed{\\text{no}} x^{{n}} \\frac{a}{{b}} {\"k\": 1} {{solution}}"
    assert template_fields(template) == ["solution"]
    filled = fill_template(template, {"solution": "S"})
    assert filled == "S \\boxed{} \\boxed{True} \\boxed{\\text{no}} x^{n} \\frac{a}{b} {\"k\": 1} {solution}"


def test_template_fields_in_order():
    assert template_fields("{solution}{question} {extra_info.rubric} {ground_truth}") == [
        "solution", "question", "extra_info.rubric", "ground_truth"]


@pytest.mark.parametrize(("text", "parsed"), [
    ("\\boxed{True}", "True"),
    ("\\boxed{False} then \\boxed{True}", "True"),  # the last box
    ("\\boxed{\\text{True}}", "\\text{True}"),  # balanced braces
    ("\\boxed{ True }", " True "),  # no stripping: mappings match exactly
    ("no box", None),
    ("\\boxed{unbalanced", None),
])
def test_last_boxed_parser(text, parsed):
    assert LastBoxedParser(type="last_boxed").parse(text) == parsed


@pytest.mark.parametrize(("pattern", "group", "text", "parsed"), [
    ("Score: (\\d+)", 1, "Score: 3 ... on reflection Score: 7", "7"),  # the last match wins
    ("Score: (\\d+)", 0, "Score: 3", "Score: 3"),
    ("Score: (?P<s>\\d+)", "s", "Score: 9", "9"),
    ("Score: (\\d+)|(none)", 1, "Score: 2 then none", None),  # the group did not take part in the last match
    ("Score: (\\d+)", 1, "no score", None),
])
def test_regex_parser(pattern, group, text, parsed):
    assert RegexParser(type="regex", pattern=pattern, group=group).parse(text) == parsed


@pytest.mark.parametrize(("parsed", "score"), [
    ("7", 7.0), (" 2.5\n", 2.5), ("-1", -1.0), ("1e1", 10.0), ("seven", None), ("", None), ("nan", None),
    ("inf", None), ("-Infinity", None),
])
def test_number_mapping(parsed, score):
    assert NumberMapping(type="number").score(parsed) == score


def test_table_mapping_is_an_exact_match():
    table = TableMapping(type="table", values={"True": 1.0, "False": -0.5}, default=0.25)
    assert [table.score(s) for s in ("True", "False", "true", " True", "")] == [1.0, -0.5, 0.25, 0.25, 0.25]
    strict = TableMapping(type="table", values={"True": 1.0}, default=None)
    assert strict.score("Maybe") is None  # a null default makes an unlisted answer a parse failure


def _recipe(**overrides: Any) -> CustomRecipe:
    return CustomRecipe(CustomRecipeSpec.model_validate(_spec(**overrides)))


GATE = {"math": {"mode": "boxed", "when": "correct"}}


def test_identity_lives_on_each_instance():
    one, two = _recipe(name="one", description="first"), _recipe(name="two", gate=GATE)
    listed = [(r.name, r.description, ["score", *r.keys], r.log_keys, r.uses_judge) for r in (one, two)]
    assert listed == [
        ("one", "first", ["score", "parsed", "judge_ok", "judge_asked"], ("judge_ok", "judge_asked"), True),
        ("two", "A test recipe.", ["score", "acc", "pred", "parsed", "judge_ok", "judge_asked"],
         ("acc", "judge_ok", "judge_asked"), True),
    ]
    assert one.settings()["name"] == "one" and two.settings()["gate"] == GATE and "name" not in vars(CustomRecipe)


# ---------------------------------------------------------------------------------------------
# (3) End to end: a real server process with --recipes-file, the scripted judge behind it


@pytest.fixture(scope="module")
def recipes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("custom-recipes") / "recipes.yaml"
    path.write_text(RECIPES_YAML)
    return path


@pytest.fixture(scope="module")
def custom_server(judge: Child, logs: Path, recipes_file: Path) -> Iterator[Child]:
    child = start_server(judge.url, logs, "--engine", "openai", "--upstream-url", judge.url + "/v1",
                         "--upstream-timeout-s", "1", "--recipes-file", str(recipes_file), name="custom")
    yield child
    child.stop()


def _reward(server: Child, recipe: str, **sample: Any) -> dict[str, Any]:
    resp = httpx.post(server.url + "/v1/reward", json={"recipe": recipe, **sample}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _prompts(judge: Child) -> list[str]:
    return httpx.get(judge.url + "/prompts", timeout=5).json()


def _correct(tag: str, reply: str, directive: str = "") -> str:
    """A right answer (last box: 4) carrying the scripted judge's reply; a distinct ``tag`` bypasses the
    server's judge-result cache."""
    return f"2 + 2 = 4 [{tag}] <<reply:{reply}>>{directive} so the answer is \\boxed{{4}}."


@pytest.mark.parametrize(("tag", "reply", "directive", "score", "parsed", "ok"), [
    ("true", "Looks right. \\boxed{True}", "", 1.0, "True", True),
    ("false", "Step 1 is unjustified. \\boxed{False}", "", 0.0, "False", True),
    ("last", "\\boxed{False} no wait \\boxed{True}", "", 1.0, "True", True),
    ("unlisted", "\\boxed{true}", "", 0.0, "true", True),  # exact match only: the table's default
    ("nobox", "I cannot decide.", "", 0.5, None, False),  # failure_score
    ("timeout", "\\boxed{True}", "<<sleep:3>>", 0.5, None, False),  # judge timeout (upstream_timeout_s 1)
])
def test_end_to_end_gated_judge_outcomes(custom_server, judge, tag, reply, directive, score, parsed, ok):
    before = len(_prompts(judge))
    result = _reward(custom_server, "gated_verdict", question=QUESTION, solution=_correct(tag, reply, directive),
                     ground_truth="4")
    assert result == {"score": score, "acc": True, "pred": "4", "parsed": parsed, "judge_ok": ok,
                      "judge_asked": True}
    assert len(_prompts(judge)) == before + 1


def test_end_to_end_gate_false_does_not_ask_the_judge(custom_server, judge):
    before = len(_prompts(judge))
    wrong = _reward(custom_server, "gated_verdict", question=QUESTION,
                    solution="2 + 2 = 5 <<reply:\\boxed{True}>> \\boxed{5}", ground_truth="4")
    test_split = _reward(custom_server, "gated_verdict", question=QUESTION,
                         solution=_correct("split", "\\boxed{False}"), ground_truth="4", extra_info={"split": "test"})
    assert wrong == {"score": -1.0, "acc": False, "pred": "5", "parsed": None, "judge_ok": True,
                     "judge_asked": False}
    assert test_split == {"score": 1.0, "acc": True, "pred": "4", "parsed": None, "judge_ok": True,
                          "judge_asked": False}
    assert len(_prompts(judge)) == before


def test_end_to_end_prompt_is_the_filled_template(custom_server, judge):
    solution = _correct("prompt", "\\boxed{True}") + " {ground_truth} {question} [Reference]"
    _reward(custom_server, "gated_verdict", question=QUESTION, solution=solution, ground_truth="4")
    expected = (f"[Question]\n{QUESTION}\n[Reference]\n4\n[Solution]\n{solution}\n"
                "Is the solution correct? Put True or False in \\boxed{}, e.g. \\boxed{True}.")
    assert _prompts(judge)[-1] == expected


@pytest.mark.parametrize(("tag", "reply", "score", "parsed", "ok"), [
    ("seven", "Score: 3. On reflection, Score: 7", 7.0, "7", True),  # the last match wins
    ("zero", "Score: 0", 0.0, "0", True),
    ("none", "Score: none", -1.0, None, False),  # failure_score
])
def test_end_to_end_regex_number_recipe(custom_server, judge, tag, reply, score, parsed, ok):
    result = _reward(custom_server, "regex_score", question=QUESTION, solution=f"[{tag}] <<reply:{reply}>> 4",
                     extra_info={"rubric": "strict"})
    assert result == {"score": score, "parsed": parsed, "judge_ok": ok, "judge_asked": True}
    assert _prompts(judge)[-1] == f"Grade [{tag}] <<reply:{reply}>> 4 for {QUESTION} (rubric: strict)."


def test_end_to_end_critique_and_fixed_keys(custom_server):
    outcomes = [
        _reward(custom_server, "gated_verdict", question=QUESTION, solution=solution, ground_truth="4",
                return_critique=True)
        for solution in (_correct("crit-true", "Fine. \\boxed{True}"), _correct("crit-fail", "no verdict"),
                         "<<reply:\\boxed{True}>> \\boxed{3}")
    ]
    assert [r["critique"] for r in outcomes] == ["Fine. \\boxed{True}", "no verdict", ""]
    assert all(set(r) == GATED_KEYS | {"critique"} for r in outcomes)
    plain = [_reward(custom_server, "gated_verdict", question=QUESTION, solution=s, ground_truth="4")
             for s in (_correct("keys-true", "\\boxed{True}"), _correct("keys-fail", "?"), "\\boxed{3}")]
    assert all(set(r) == GATED_KEYS for r in plain)
    regex = _reward(custom_server, "regex_score", question=QUESTION, solution="<<reply:Score: 5>> crit",
                    extra_info={"rubric": "r"}, return_critique=True)
    assert regex == {"score": 5.0, "parsed": "5", "judge_ok": True, "judge_asked": True, "critique": "Score: 5"}


def test_end_to_end_missing_template_field_is_a_400(custom_server):
    resp = httpx.post(custom_server.url + "/v1/reward", json={"recipe": "regex_score", "question": QUESTION,
                                                              "solution": "x"}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "extra_info.rubric"


def test_end_to_end_recipes_are_listed(custom_server):
    listed = httpx.get(custom_server.url + "/v1/recipes", timeout=5).json()
    by_name = {r["name"]: r for r in listed["recipes"]}
    assert {"math", "fapo", "genrm_verdict", "fapo_judge_train", "gated_verdict", "regex_score"} <= set(by_name)
    gated, regex = by_name["gated_verdict"], by_name["regex_score"]
    assert gated["keys"] == ["score", "acc", "pred", "parsed", "judge_ok", "judge_asked"]
    assert regex["keys"] == ["score", "parsed", "judge_ok", "judge_asked"]
    assert gated["uses_judge"] is True and regex["uses_judge"] is True
    assert gated["description"].startswith("Math rule first") and gated["settings"]["failure_score"] == 0.5
    assert gated["settings"]["template"] == GATED_TEMPLATE and gated["settings"]["max_tokens"] == 64
    assert regex["settings"]["parser"] == {"type": "regex", "pattern": "Score: (\\d+)", "group": 1}


def test_end_to_end_openrlhf_extra_logs_use_the_log_keys(custom_server):
    responses = ["<<reply:\\boxed{False}>> openrlhf \\boxed{4}", "\\boxed{7}"]
    body = {"query": [QUESTION + r for r in responses], "prompts": [QUESTION, QUESTION], "labels": ["4", "4"]}
    resp = httpx.post(custom_server.url + "/get_reward", params={"recipe": "gated_verdict"}, json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"rewards": [0.0, -1.0], "scores": [0.0, -1.0],
                           "extra_logs": {"acc": [1.0, 0.0], "judge_ok": [1.0, 1.0], "judge_asked": [1.0, 0.0]}}


def test_end_to_end_bad_recipes_file_stops_the_server(judge, logs, tmp_path):
    path = _write(tmp_path, _spec(template="{questoin}"))
    port = free_port()
    args = ["serve", "--engine", "openai", "--upstream-url", judge.url + "/v1", "--recipes-file", str(path),
            "--port", str(port)]
    child = spawn(f"custom-bad-{port}", f"http://127.0.0.1:{port}", args, log_dir=logs)
    try:
        with pytest.raises(StackError) as info:
            wait_ready(child, time.monotonic() + 60)
        assert str(path) in str(info.value) and "unknown template field {questoin}" in str(info.value)
    finally:
        child.stop()


def test_end_to_end_gate_when_incorrect_judges_only_wrong_answers(custom_server, judge):
    before = len(_prompts(judge))
    right = _reward(custom_server, "wrong_only", question="2+2?", ground_truth="4",
                    solution=_correct("wo-right", "\\boxed{0.25}"), extra_info={"response_length": 10})
    assert (right["score"], right["judge_asked"], right["acc"]) == (1.0, False, True)
    assert len(_prompts(judge)) == before
    wrong = _reward(custom_server, "wrong_only", question="2+2?", ground_truth="5",
                    solution=_correct("wo-wrong", "\\boxed{0.25}"), extra_info={"response_length": 10})
    assert (wrong["score"], wrong["judge_asked"], wrong["parsed"], wrong["acc"]) == (0.25, True, "0.25", False)
    assert len(_prompts(judge)) == before + 1


def test_end_to_end_gate_requires_ground_truth(custom_server):
    resp = httpx.post(custom_server.url + "/v1/reward", timeout=30,
                      json={"recipe": "gated_verdict", "question": "2+2?", "solution": "\\boxed{4}"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "ground_truth"


def test_end_to_end_recipe_level_overlong_shaping(custom_server):
    sample = {"question": "2+2?", "ground_truth": "4", "solution": _correct("wo-long", "\\boxed{0}")}
    shaped = _reward(custom_server, "wrong_only", **sample, extra_info={"response_length": 90})
    assert (shaped["score"], shaped["overlong_penalty"]) == (0.5, -0.5)  # rule +1, penalty -(90-80)/20
    own = _reward(custom_server, "wrong_only", **sample, extra_info={"response_length": 90},
                  overlong={"max_resp_len": 200, "buffer_len": 20})
    assert own["overlong_penalty"] == 0.0  # the request's own shaping wins over the recipe's
