"""``math``: the seeds' rule reward (verl ``math_dapo`` semantics, specs/math-rule.md): +1 / -1."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from services.genrm_server.cpu_pool import CpuPool
from services.genrm_server.recipes.base import Judge, Recipe, require
from services.genrm_server.recipes.symbolic import verify_answer
from trainer_client.math_rule import compute_math
from trainer_client.protocol import RewardRequest

TIMEOUT_PRED = "[TIMEOUT]"


class MathRecipe(Recipe):
    name: ClassVar[str] = "math"
    description: ClassVar[str] = (
        "Rule-based answer check (DAPO/verl math_dapo semantics; or symbolic with mode math_verify): +1 / -1."
    )
    keys: ClassVar[tuple[str, ...]] = ("acc", "pred")
    log_keys: ClassVar[tuple[str, ...]] = ("acc",)

    def __init__(self, mode: str = "boxed", pool: CpuPool | None = None, verify_timeout_s: float = 5.0):
        self.mode, self.pool, self.verify_timeout_s = mode, pool or CpuPool(), verify_timeout_s

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode, **({"timeout_s": self.verify_timeout_s} if self.mode == "math_verify" else {})}

    def score_inline(self, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.mode == "math_verify":
            return None  # symbolic checks run in a process pool with a time limit
        # Inline on purpose: the rule reads a bounded 300-character tail (~4 us), cheaper than any pool hop.
        return compute_math(fields["solution"], require(fields, "ground_truth"), self.mode).to_dict()

    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        if (result := self.score_inline(vars(sample))) is not None:
            return result
        ground_truth = require(sample, "ground_truth")
        try:
            acc, pred = await self.pool.run(verify_answer, sample.solution, ground_truth,
                                            max(1, int(self.verify_timeout_s)), timeout_s=self.verify_timeout_s + 1)
        except TimeoutError:
            acc, pred = False, TIMEOUT_PRED  # reported in pred, never a silent pass
        return {"score": 1.0 if acc else -1.0, "acc": acc, "pred": pred}
