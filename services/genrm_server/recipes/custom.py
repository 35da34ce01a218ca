"""Custom judge recipes declared in a YAML file (``--recipes-file``), so a new judge needs no code change.

File format::

    recipes:
      - name: my_verdict                 # identifier; must not clash with a built-in recipe
        description: "Judge says True/False, only for correct answers."
        template: |                       # fields: {question} {solution} {ground_truth} {extra_info.KEY}
          [Problem] {question}
          [Solution] {solution}
          Put True or False in \\boxed{}.
        max_tokens: 4096                  # default 4096
        temperature: 0.0                  # optional; omitted = the engine's default
        parser: {type: last_boxed}        # or {type: regex, pattern: 'Score: (\\d+)', group: 1} (last match wins)
        mapping: {type: table, values: {"True": 1.0, "False": 0.0}, default: 0.0}   # or {type: number}
        failure_score: 0.0                # judge failed, or its answer did not parse
        gate: {math: {mode: boxed, when: correct}}   # optional: math rule first, judge only when it says so
        skip_splits: [test]               # optional: never ask the judge for these extra_info.split values

Fields are filled in one pass (inserted text is never rescanned); LaTeX brace groups such as ``\\boxed{}`` and
``\\boxed{True}`` stay literal, and ``{{name}}`` writes a literal ``{name}``. When the judge is not asked (gate or
skipped split) the score is the math rule's, or ``failure_score`` without a gate, with ``judge_ok`` true.

Every sample gets the same keys: ``score``, ``parsed``, ``judge_ok``, ``judge_asked`` (+ ``acc``, ``pred`` with a
math gate, + ``critique`` when asked), because verl reads the key set from a batch's first sample.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from services.genrm_server.recipes.base import Judge, Recipe, RecipeInputError, require
from trainer_client.math_rule import MathResult, compute_math, last_boxed
from trainer_client.protocol import OverlongShaping, RewardRequest

# Built-in names are listed here as well as read from the registry: the registry imports this module.
BUILTIN_RECIPE_NAMES: tuple[str, ...] = ("math", "fapo", "genrm_verdict", "fapo_judge_train", "disrm")
SAMPLE_FIELDS: tuple[str, ...] = ("question", "solution", "ground_truth")

# A field is ``{name}`` or ``{extra_info.key}``. Literal text: a brace group right after a LaTeX command
# (``\boxed{True}``), anything that is not a dotted identifier (``\boxed{}``, ``{1, 2}``, JSON), and the escape
# ``{{name}}``, which stands for ``{name}`` (``x^{{n}}`` in a template is ``x^{n}`` in the prompt).
_NAME_RE = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*"
_FIELD = re.compile(rf"(?P<command>\\[A-Za-z]+)?\{{(?P<field>{_NAME_RE})\}}|\{{\{{(?P<escaped>{_NAME_RE})\}}\}}")
_RECIPE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
Score = Annotated[float, Field(allow_inf_nan=False)]  # NaN/inf would make the response invalid JSON


# ---------------------------------------------------------------------------------------------
# Templates


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order of appearance (LaTeX brace groups excluded)."""
    return [m.group("field") for m in _FIELD.finditer(template) if m.group("field") and not m.group("command")]


def _is_known_field(field: str) -> bool:
    """``question`` / ``solution`` / ``ground_truth``, or ``extra_info.KEY`` with exactly one non-empty key."""
    if field in SAMPLE_FIELDS:
        return True
    head, _, key = field.partition(".")
    return head == "extra_info" and bool(key) and "." not in key


def fill_template(template: str, values: dict[str, str]) -> str:
    """Substitute every field in one pass: inserted text is never rescanned, so a solution cannot rewrite the
    prompt by containing ``{ground_truth}``; LaTeX such as ``\\boxed{}`` stays as written."""

    def one(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "{" + m.group("escaped") + "}"
        return m.group(0) if m.group("command") else values[m.group("field")]

    return _FIELD.sub(one, template)


def _as_text(value: Any) -> str:
    """An ``extra_info`` value as prompt text: strings verbatim, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Spec


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LastBoxedParser(_Spec):
    """The content of the judge's last ``\\boxed{...}`` (balanced braces)."""

    type: Literal["last_boxed"]

    def parse(self, text: str) -> str | None:
        return last_boxed(text)


class RegexParser(_Spec):
    """A group of the last match of ``pattern`` in the judge's answer."""

    type: Literal["regex"]
    pattern: str
    group: Annotated[int, Field(ge=0)] | str = 1
    _compiled: re.Pattern[str] = PrivateAttr()

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {v!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _group_exists(self) -> RegexParser:
        compiled = self._compiled = re.compile(self.pattern)
        exists = self.group in compiled.groupindex if isinstance(self.group, str) else self.group <= compiled.groups
        if not exists:
            raise ValueError(f"group: pattern {self.pattern!r} has no group {self.group!r} "
                             f"({compiled.groups} numbered group(s))")
        return self

    def parse(self, text: str) -> str | None:
        matches = list(self._compiled.finditer(text))
        return matches[-1].group(self.group) if matches else None  # the last match wins


class NumberMapping(_Spec):
    """The parsed text as a float; not a finite number means the judge's answer did not parse."""

    type: Literal["number"]

    def score(self, parsed: str) -> float | None:
        try:
            value = float(parsed)
        except ValueError:
            return None
        return value if math.isfinite(value) else None


class TableMapping(_Spec):
    """Exact string match against ``values``; anything else scores ``default`` (null: counts as a parse failure)."""

    type: Literal["table"]
    values: Annotated[dict[str, Score], Field(min_length=1)]
    default: Score | None = 0.0

    @field_validator("values", mode="before")
    @classmethod
    def _string_keys(cls, v: Any) -> Any:
        bad = [k for k in v if not isinstance(k, str)] if isinstance(v, dict) else []
        if bad:
            raise ValueError(f"keys must be strings: quote {bad[0]!r} (YAML reads unquoted True/no/1 as "
                             "booleans or numbers, e.g. write 'True': 1.0)")
        return v

    def score(self, parsed: str) -> float | None:
        return self.values.get(parsed, self.default)


class MathGate(_Spec):
    """Rule-based math check first; the judge is asked only when its verdict equals ``when``."""

    mode: Literal["boxed", "answer", "answer_or_boxed"] = "boxed"
    when: Literal["correct", "incorrect"] = "correct"


class GateSpec(_Spec):
    math: MathGate


Parser = Annotated[LastBoxedParser | RegexParser, Field(discriminator="type")]
Mapping = Annotated[NumberMapping | TableMapping, Field(discriminator="type")]


class CustomRecipeSpec(_Spec):
    """One custom recipe as written in the recipes file."""

    name: Annotated[str, Field(pattern=_RECIPE_NAME, max_length=64)]
    description: str
    template: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] = 4096
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    parser: Parser
    mapping: Mapping
    failure_score: Score = 0.0
    gate: GateSpec | None = None
    skip_splits: list[str] = Field(default_factory=list)
    overlong: OverlongShaping | None = None  # DAPO shaping for every sample of this recipe (a request's wins)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, v: str) -> str:
        if v in reserved_names():
            raise ValueError(f"name {v!r} is a built-in recipe; choose another name")
        return v

    @field_validator("template")
    @classmethod
    def _known_fields(cls, v: str) -> str:
        unknown = [f for f in template_fields(v) if not _is_known_field(f)]
        if unknown:
            raise ValueError(f"unknown template field {{{unknown[0]}}}; allowed: {{question}}, {{solution}}, "
                             f"{{ground_truth}}, {{extra_info.KEY}} (write {{{{{unknown[0]}}}}} for literal braces)")
        return v


def reserved_names() -> set[str]:
    """Names a custom recipe may not take: the built-ins, including any registered since this list was written."""
    from services.genrm_server.recipes import RECIPES  # the registry imports this module: import at call time

    return {*BUILTIN_RECIPE_NAMES, *RECIPES}


# ---------------------------------------------------------------------------------------------
# Recipe


class CustomRecipe(Recipe):
    """A judge recipe built from a :class:`CustomRecipeSpec`; identity and keys live on the instance."""

    uses_judge = True

    def __init__(self, spec: CustomRecipeSpec):
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        gated = spec.gate is not None
        shaped = ("overlong_penalty",) if spec.overlong else ()  # added by the service after scoring
        self.keys = (*(("acc", "pred") if gated else ()), "parsed", "judge_ok", "judge_asked", *shaped)
        self.log_keys = (*(("acc",) if gated else ()), "judge_ok", "judge_asked", *shaped)
        self._fields = tuple(dict.fromkeys(template_fields(spec.template)))  # in order: the first missing one is named
        # What the result reads from extra_info (the server's judge-result cache key): template keys and the split.
        used = {f.partition(".")[2] for f in self._fields if f.startswith("extra_info.")}
        self.extra_keys = tuple(sorted(used | ({"split"} if spec.skip_splits else set())))
        self.overlong = spec.overlong

    def settings(self) -> dict[str, Any]:
        return self.spec.model_dump()

    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        rule = self._gate(sample)
        out: dict[str, Any] = {"score": self.spec.failure_score if rule is None else rule.score,
                               **({} if rule is None else {"acc": rule.acc, "pred": rule.pred}),
                               "parsed": None, "judge_ok": True, "judge_asked": False}
        critique = ""
        if self._should_ask(sample, rule):
            reply = await judge.ask(self.prompt(sample), max_tokens=self.spec.max_tokens, recipe=self.name,
                                    temperature=self.spec.temperature)
            critique = reply.text
            out.update(self.judge_result(reply.text if reply.ok else None))
        if sample.return_critique:
            out["critique"] = critique
        return out

    def _gate(self, sample: RewardRequest) -> MathResult | None:
        """The math rule's result when a gate is configured (ground_truth is then required), else None."""
        if self.spec.gate is None:
            return None
        return compute_math(sample.solution, require(sample, "ground_truth"), self.spec.gate.math.mode)

    def _should_ask(self, sample: RewardRequest, rule: MathResult | None) -> bool:
        """Ask unless the split is skipped or the math gate says otherwise."""
        gate = self.spec.gate
        if sample.extra_info.get("split") in self.spec.skip_splits:
            return False
        return gate is None or rule is None or rule.acc == (gate.math.when == "correct")

    def prompt(self, sample: RewardRequest) -> str:
        """The template filled from the sample; a field the template uses but the sample lacks is a 400."""
        values: dict[str, str] = {}
        for field in self._fields:
            if field == "solution":
                values[field] = sample.solution  # may be empty: an empty answer is still judged
            elif field in SAMPLE_FIELDS:
                values[field] = require(sample, field)
            else:
                values[field] = self._extra(sample, field)
        return fill_template(self.spec.template, values)

    @staticmethod
    def _extra(sample: RewardRequest, field: str) -> str:
        key = field.partition(".")[2]
        if key not in sample.extra_info or sample.extra_info[key] is None:
            raise RecipeInputError(f"{field} is required by this recipe's template", field)
        return _as_text(sample.extra_info[key])

    def judge_result(self, text: str | None) -> dict[str, Any]:
        """``score``/``parsed``/``judge_ok``/``judge_asked`` from the judge's answer (None: the call failed)."""
        parsed = None if text is None else self.spec.parser.parse(text)
        value = None if parsed is None else self.spec.mapping.score(parsed)
        ok = value is not None
        return {"score": value if ok else self.spec.failure_score, "parsed": parsed, "judge_ok": ok,
                "judge_asked": True}


# ---------------------------------------------------------------------------------------------
# Loading

_UNION_TAGS = {"parser": ("last_boxed", "regex"), "mapping": ("number", "table")}


def load_custom_recipes(path: str | Path) -> list[CustomRecipe]:
    """Read and validate a recipes file; any problem is a ValueError naming the file, the recipe and the field."""
    path = Path(path)
    raw = _read_yaml(path)
    specs: list[CustomRecipeSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        spec = _validate(path, index, item)
        if spec.name in seen:
            raise ValueError(f"{path}: recipe {index} ('{spec.name}'): field 'name': duplicate recipe name "
                             f"'{spec.name}' (already used by recipe {seen[spec.name]})")
        seen[spec.name] = index
        specs.append(spec)
    return [CustomRecipe(spec) for spec in specs]


def _read_yaml(path: Path) -> list[Any]:
    """The file's ``recipes`` list; a missing file, bad YAML or a wrong top-level shape is a ValueError."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"custom recipes file {path}: cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"custom recipes file {path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"recipes"}:
        raise ValueError(f"custom recipes file {path}: expected a mapping with exactly one key, 'recipes' "
                         f"(a list of recipes); got {_shape(data)}")
    if not isinstance(data["recipes"], list):
        raise ValueError(f"custom recipes file {path}: field 'recipes' must be a list, got {_shape(data['recipes'])}")
    return data["recipes"]


def _shape(data: Any) -> str:
    """A short description of what was found instead."""
    if data is None:
        return "an empty document"
    return f"a mapping with keys {sorted(map(str, data))}" if isinstance(data, dict) else f"a {type(data).__name__}"


def _validate(path: Path, index: int, item: Any) -> CustomRecipeSpec:
    """One spec, or a ValueError listing each bad field of recipe ``index``."""
    name = item.get("name") if isinstance(item, dict) else None
    where = f"{path}: recipe {index}" + (f" ('{name}')" if isinstance(name, str) else "")
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping of recipe fields, got {type(item).__name__}")
    try:
        return CustomRecipeSpec.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(f"field '{_loc(e['loc'])}': {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ValueError(f"{where}: {problems}") from None


def _loc(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a dotted field path, without the tags of discriminated unions."""
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[1] in _UNION_TAGS.get(parts[0], ()):
        del parts[1]
    return ".".join(parts) or "(recipe)"
