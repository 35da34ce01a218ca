"""``code``: run the policy's program against the sample's test cases in the sandbox (specs/code-rule.md).

The score is the pass rate (``continuous``) or all-or-nothing (``binary``). Per sample, ``extra_info`` may set
``language``, ``scoring``, ``max_tests``, ``float_tolerance``, ``run_timeout`` (seconds) and ``memory_limit_MB``
within the server's maxima. A failure of the sandbox itself is an error (503), never a score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from services.genrm_server.recipes.base import Judge, Recipe, RecipeInputError
from services.sandbox.input_error import CodeInputError
from services.sandbox.scoring import KEYS, score_code
from services.sandbox.session import Limits, SessionFactory
from trainer_client.protocol import RewardRequest


@dataclass(frozen=True)
class CodeDefaults:
    """The server's defaults and maxima for code runs (``--code-*`` settings)."""

    scoring: str = "continuous"
    max_tests: int | None = None
    float_tolerance: float = 1e-6
    limits: Limits = field(default_factory=Limits)
    max_run_timeout_s: float = 60.0
    max_memory_mb: int = 8192
    max_program_bytes: int = 1 << 20


class CodeRecipe(Recipe):
    name: ClassVar[str] = "code"
    description: ClassVar[str] = (
        "Runs the last fenced code block against the sample's test cases in the sandbox: pass rate, or binary."
    )
    keys: ClassVar[tuple[str, ...]] = tuple(k for k in KEYS if k != "score")
    log_keys: ClassVar[tuple[str, ...]] = ("acc", "pass_rate", "tests_passed", "tests_total")

    def __init__(self, sandbox: SessionFactory, defaults: CodeDefaults | None = None, isolation: str = "bwrap"):
        self.sandbox, self.defaults, self.isolation = sandbox, defaults or CodeDefaults(), isolation

    def settings(self) -> dict[str, Any]:
        d = self.defaults
        return {"sandbox": self.isolation, "scoring": d.scoring, "max_tests": d.max_tests,
                "float_tolerance": d.float_tolerance, "run_timeout_s": d.limits.wall_s,
                "memory_limit_MB": d.limits.memory_mb, "max_run_timeout_s": d.max_run_timeout_s,
                "max_memory_limit_MB": d.max_memory_mb, "max_program_bytes": d.max_program_bytes}

    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        info = sample.extra_info
        if sample.ground_truth is None or sample.ground_truth == "":
            raise RecipeInputError("ground_truth (the test cases) is required by the code recipe", "ground_truth")
        size = len(sample.solution.encode("utf-8", "surrogatepass"))
        if size > self.defaults.max_program_bytes:
            raise RecipeInputError(f"solution of {size} bytes exceeds the limit of {self.defaults.max_program_bytes} "
                                   "bytes (code_max_program_bytes)", "solution")
        try:
            result = await score_code(
                self.sandbox, sample.solution, sample.ground_truth, language=info.get("language"),
                scoring=info.get("scoring", self.defaults.scoring), max_tests=self._max_tests(info),
                float_tolerance=info.get("float_tolerance", self.defaults.float_tolerance), limits=self._limits(info))
        except CodeInputError as exc:
            own = exc.param.split(".", 1)[0] in ("ground_truth", "extra_info")  # else an option of extra_info
            param = exc.param if own else f"extra_info.{exc.param}"
            raise RecipeInputError(exc.message, param) from None
        return result.to_dict()

    def _max_tests(self, info: dict[str, Any]) -> int | None:
        value = info.get("max_tests", self.defaults.max_tests)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeInputError(f"max_tests must be a whole number >= 1, got {value!r}", "extra_info.max_tests")
        return value

    def _limits(self, info: dict[str, Any]) -> Limits:
        limits = self.defaults.limits
        wall = _number(info, "run_timeout", limits.wall_s, self.defaults.max_run_timeout_s)
        memory = _number(info, "memory_limit_MB", limits.memory_mb, self.defaults.max_memory_mb)
        return limits.with_(wall_s=float(wall), cpu_s=None, memory_mb=int(memory))


def _number(info: dict[str, Any], key: str, default: float, maximum: float) -> float:
    value = info.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise RecipeInputError(f"{key} must be a number > 0, got {value!r}", f"extra_info.{key}")
    if value > maximum:
        raise RecipeInputError(f"{key} of {value:g} is above this server's maximum of {maximum:g}",
                               f"extra_info.{key}")
    return value
