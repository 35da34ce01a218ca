"""``disrm``: a discriminative reward model's scalar (a ``*ForSequenceClassification`` model with one label,
e.g. a Skywork-Reward / ArmoRM-style RM). ``score`` is the raw scalar, unbounded and unnormalised."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from services.genrm_server.engines import EngineError
from services.genrm_server.recipes.base import Judge, Recipe, require
from trainer_client.protocol import RewardRequest


class DisRMRecipe(Recipe):
    name: ClassVar[str] = "disrm"
    description: ClassVar[str] = (
        "A discriminative reward model (sequence classification, one label) scores question + solution: "
        "score = rm_score = its raw scalar."
    )
    keys: ClassVar[tuple[str, ...]] = ("rm_score",)
    log_keys: ClassVar[tuple[str, ...]] = ("rm_score",)
    uses_judge: ClassVar[bool] = True  # it needs the server's model (a reward model, not a GenRM); results cache
    extra_keys: ClassVar[tuple[str, ...] | None] = ()  # reads no extra_info

    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        text = conversation_text(judge.engine, require(sample, "question"), sample.solution)
        (rm_score,) = await judge.engine.classify([text])
        if not math.isfinite(rm_score):  # fp16 overflow and the like: no JSON number, and no reward
            raise EngineError(f"reward model '{judge.engine.model_name}' returned a non-finite score ({rm_score})")
        out: dict[str, Any] = {"score": rm_score, "rm_score": rm_score}
        if sample.return_critique:
            out["critique"] = ""  # a discriminative RM writes no critique
        return out


def conversation_text(engine: Any, question: str, solution: str) -> str:
    """The [user: question, assistant: solution] conversation as the RM was trained to read it.

    The engine's tokenizer's chat template when it has one (the transformers engine); otherwise (an upstream
    that tokenizes itself) ``question + "\\n" + solution``.
    """
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": solution}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return question + "\n" + solution
