"""``fapo``: math rule first; for correct training samples, the FAPO GenRM looks for the earliest flawed step.

A flaw in a "correct" solution makes it a *flawed positive*: +1 minus ``flaw_penalty`` (default 1.0 → 0.0).
A failed or unparsable judge call keeps the rule score, as the published setup did, but says so
(``judge_ok = false``) and is counted in metrics — it is never silently folded in (specs/fapo-judge.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

from services.genrm_server.recipes.base import Judge, Recipe, require
from services.genrm_server.recipes.parsers import parse_step_index
from services.genrm_server.recipes.templates import FAPO_PROMPT, fill
from trainer_client.math_rule import compute_math
from trainer_client.protocol import RewardRequest


class FapoRecipe(Recipe):
    name: ClassVar[str] = "fapo"
    description: ClassVar[str] = (
        "Math rule, then the FAPO GenRM judges correct training samples: a flawed positive scores 1 - penalty."
    )
    keys: ClassVar[tuple[str, ...]] = ("acc", "pred", "flawed_positive", "judge_verdict", "judge_ok", "judge_asked")
    log_keys: ClassVar[tuple[str, ...]] = ("acc", "flawed_positive", "judge_ok", "judge_asked")
    uses_judge: ClassVar[bool] = True
    extra_keys: ClassVar[tuple[str, ...] | None] = ("split",)

    def __init__(self, judge_max_tokens: int = 16384, flaw_penalty: float = 1.0):
        self.judge_max_tokens, self.flaw_penalty = judge_max_tokens, flaw_penalty

    def settings(self) -> dict[str, Any]:
        return {"judge_max_tokens": self.judge_max_tokens, "flaw_penalty": self.flaw_penalty, "math_mode": "boxed"}

    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        ground_truth = require(sample, "ground_truth")
        judged_split = sample.extra_info.get("split") != "test"
        # Checked up front: a run missing the question must fail at once, not only on its first correct answer.
        question = require(sample, "question") if judged_split else sample.question
        rule = compute_math(sample.solution, ground_truth, "boxed")
        out: dict[str, Any] = {
            **rule.to_dict(), "flawed_positive": False, "judge_verdict": None, "judge_ok": True, "judge_asked": False,
        }
        critique = ""
        if rule.acc and judged_split:
            prompt = fill(FAPO_PROMPT, problem=str(question), ground_truth=ground_truth, solution=sample.solution)
            reply = await judge.ask(prompt, max_tokens=self.judge_max_tokens, recipe=self.name)
            critique = reply.text
            verdict = parse_step_index(reply.text) if reply.ok else None
            out["judge_asked"] = True
            if verdict is None:
                out["judge_ok"] = False
            else:
                out["judge_verdict"] = verdict
                if verdict != -1:
                    out["flawed_positive"] = True
                    out["score"] = rule.score - self.flaw_penalty
        if sample.return_critique:
            out["critique"] = critique
        return out
