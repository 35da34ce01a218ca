"""``fapo_judge_train``: the reward for training the FAPO judge itself (FAPO step 1, specs/fapo-judge.md).

``solution`` is the judge's output, ``ground_truth`` the labelled earliest-error index ``g`` (-1 when the
solution is flawless), ``extra_info.num_steps`` the step count ``T``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from services.genrm_server.recipes.base import Judge, Recipe, RecipeInputError, require
from services.genrm_server.recipes.parsers import parse_step_index
from trainer_client.protocol import RewardRequest

_INTEGER = re.compile(r"[+-]?[0-9]+")


def judge_training_reward(predicted: int | None, labelled: int, steps: int) -> float:
    if predicted is None or not (predicted == -1 or 0 <= predicted < steps):
        return -1.0
    if labelled == -1:
        return 1.0 if predicted == -1 else -1.0
    if predicted == -1:
        return -1.0
    return 1.0 - abs(predicted - labelled) / steps


class FapoJudgeTrainRecipe(Recipe):
    name: ClassVar[str] = "fapo_judge_train"
    description: ClassVar[str] = "Scores a judge's earliest-error index against the label (training the GenRM)."
    keys: ClassVar[tuple[str, ...]] = ("pred", "judge_ok")
    log_keys: ClassVar[tuple[str, ...]] = ("judge_ok",)

    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        label = require(sample, "ground_truth").strip()
        steps = sample.extra_info.get("num_steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            raise RecipeInputError("extra_info.num_steps (the solution's step count, an integer > 0) is required",
                                   "extra_info.num_steps")
        if not _INTEGER.fullmatch(label) or not (int(label) == -1 or 0 <= int(label) < steps):
            raise RecipeInputError(
                f"ground_truth must be the labelled earliest-error step, -1 or 0..{steps - 1}; got {label!r}",
                "ground_truth",
            )
        predicted = parse_step_index(sample.solution)
        return {"score": judge_training_reward(predicted, int(label), steps), "pred": predicted,
                "judge_ok": predicted is not None}
