"""``math``: the seeds' rule reward (verl ``math_dapo`` semantics, specs/math-rule.md): +1 / -1."""

from __future__ import annotations

from typing import Any, ClassVar

from services.genrm_server.recipes.base import Judge, Recipe, require
from trainer_client.math_rule import compute_math
from trainer_client.protocol import RewardRequest


class MathRecipe(Recipe):
    name: ClassVar[str] = "math"
    description: ClassVar[str] = "Rule-based answer check (DAPO/verl math_dapo semantics): +1 correct, -1 otherwise."
    keys: ClassVar[tuple[str, ...]] = ("acc", "pred")
    log_keys: ClassVar[tuple[str, ...]] = ("acc",)

    def __init__(self, mode: str = "boxed"):
        self.mode = mode

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode}

    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        return compute_math(sample.solution, require(sample, "ground_truth"), self.mode).to_dict()
