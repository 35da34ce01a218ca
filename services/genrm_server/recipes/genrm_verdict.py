"""``genrm_verdict``: a judge answers ``\\boxed{True}`` / ``\\boxed{False}``; 1.0 for exactly ``True``, else 0.0."""

from __future__ import annotations

from typing import Any, ClassVar

from services.genrm_server.recipes.base import Judge, Recipe, require
from services.genrm_server.recipes.parsers import parse_verdict
from services.genrm_server.recipes.templates import VERDICT_PROMPT, fill
from trainer_client.protocol import RewardRequest


class VerdictRecipe(Recipe):
    name: ClassVar[str] = "genrm_verdict"
    description: ClassVar[str] = "A GenRM judges the solution correct (\\boxed{True}) or not: 1.0 / 0.0."
    keys: ClassVar[tuple[str, ...]] = ("verdict", "judge_ok")
    log_keys: ClassVar[tuple[str, ...]] = ("judge_ok",)
    uses_judge: ClassVar[bool] = True
    extra_keys: ClassVar[tuple[str, ...] | None] = ()

    def __init__(self, judge_max_tokens: int = 16384):
        self.judge_max_tokens = judge_max_tokens

    def settings(self) -> dict[str, Any]:
        return {"judge_max_tokens": self.judge_max_tokens}

    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        prompt = fill(VERDICT_PROMPT, problem=require(sample, "question"), solution=sample.solution)
        reply = await judge.ask(prompt, max_tokens=self.judge_max_tokens, recipe=self.name)
        verdict = parse_verdict(reply.text) if reply.ok else None
        out: dict[str, Any] = {"score": 1.0 if verdict else 0.0, "verdict": verdict, "judge_ok": verdict is not None}
        if sample.return_critique:
            out["critique"] = reply.text
        return out
