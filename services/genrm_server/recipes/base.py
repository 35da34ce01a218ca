"""The recipe interface: how one sample becomes ``{score, ...fixed keys}``.

A recipe declares its key set up front and returns exactly those keys for every sample, whatever happens
(verl reads the keys from the first sample of a batch and breaks on a missing one).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from services.genrm_server.engines import Engine, EngineError, EngineInputError, GenerationInput, SamplingParams
from trainer_client.protocol import OverlongShaping, RewardRequest


class RecipeInputError(Exception):
    """The sample cannot be scored as given: 400 naming ``param``."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


class UnknownRecipe(RecipeInputError):
    """A recipe this server does not serve: 404 naming ``recipe``."""

    def __init__(self, name: str, served: list[str]):
        hint = " (code rewards run on sandbox servers: genrm serve --recipe code)" if name == "code" else ""
        super().__init__(f"unknown recipe '{name}'; this server serves: {', '.join(served)}{hint}", "recipe")


@dataclass
class JudgeReply:
    text: str
    ok: bool
    error: str | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Judge:
    """Asks the server's engine one single-user-message question (the judge's chat template applies)."""

    def __init__(
        self, engine: Engine, on_reply: Callable[[str, JudgeReply], None] | None = None, timeout_s: float = 1800.0
    ):
        self.engine = engine
        self._on_reply = on_reply  # metrics: judge latency and call failures per recipe
        self.timeout_s = timeout_s

    async def ask(
        self, prompt: str, *, max_tokens: int | None, recipe: str, temperature: float | None = None
    ) -> JudgeReply:
        t0 = time.perf_counter()
        try:
            reply = await asyncio.wait_for(self._ask(prompt, max_tokens, temperature), self.timeout_s)
        except asyncio.TimeoutError:
            reply = JudgeReply("", False, f"judge call exceeded {self.timeout_s:g}s", time.perf_counter() - t0)
        if self._on_reply:
            self._on_reply(recipe, reply)
        return reply

    async def _ask(self, prompt: str, max_tokens: int | None, temperature: float | None) -> JudgeReply:
        t0 = time.perf_counter()
        reply = JudgeReply("", True)
        try:
            await self._generate(prompt, max_tokens, temperature, reply)
        except EngineInputError as exc:
            if exc.param != "max_tokens":
                reply.ok, reply.error = False, exc.message
            else:  # the configured budget (16,384 for FAPO) exceeds this model's context: use what fits
                try:
                    await self._generate(prompt, None, temperature, reply)
                except EngineError as exc2:
                    reply.ok, reply.error = False, exc2.message
        except EngineError as exc:
            reply.ok, reply.error = False, exc.message
        if not reply.ok:
            reply.text = ""
        reply.latency_s = time.perf_counter() - t0
        return reply

    async def _generate(self, prompt: str, max_tokens: int | None, temperature: float | None,
                        reply: JudgeReply) -> None:
        """Fill ``reply`` with the judge's text and token counts (counted even when it aborts)."""
        inp = GenerationInput(messages=[{"role": "user", "content": prompt}], incremental=False)
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
        parts: list[str] = []
        async for delta in self.engine.generate(inp, params):
            parts.append(delta.text)
            if delta.finish_reason is not None:
                reply.prompt_tokens += delta.prompt_tokens or 0
                reply.completion_tokens += delta.completion_tokens or 0
            if delta.finish_reason == "abort":
                raise EngineError(f"judge generation aborted: {delta.stop_reason or 'engine stopping'}")
        reply.text = "".join(parts)


class Recipe(abc.ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]  # besides "score"; "critique" is added when a request asks for it
    log_keys: ClassVar[tuple[str, ...]] = ()  # keys that are always numbers/bools (OpenRLHF's extra_logs)
    uses_judge: ClassVar[bool] = False
    # extra_info fields the result depends on (the cache key); None = all of extra_info.
    extra_keys: ClassVar[tuple[str, ...] | None] = None
    # Recipe-level DAPO overlong shaping (custom recipes can set it); a request's own ``overlong`` wins.
    overlong: OverlongShaping | None = None

    def settings(self) -> dict[str, Any]:
        """The recipe's settings as shown by ``GET /v1/recipes``."""
        return {}

    @abc.abstractmethod
    async def score(self, sample: RewardRequest, judge: Judge) -> dict[str, Any]:
        """Return ``{"score": float, **{k: ... for k in keys}}`` (plus ``critique`` when asked)."""

    def score_inline(self, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """The same result computed at once, without waiting on anything; None when this recipe (or its
        mode) cannot. A batch scores such samples in a plain loop: an await per sample cost a tenth of one.

        ``fields``: the sample's ``RewardFields`` (every field, defaults filled): a batch's validated dict,
        or ``vars(request)``; no model is built for an inline sample."""
        return None


def require(sample: RewardRequest | Mapping[str, Any], field: str) -> str:
    """The field's text; a 400 naming it when it is missing, or an object where this recipe reads text."""
    value = sample[field] if isinstance(sample, dict) else getattr(sample, field)
    if value is None or value == "":
        raise RecipeInputError(f"{field} is required by this recipe", field)
    if not isinstance(value, str):
        raise RecipeInputError(f"{field} must be text for this recipe, got an object (test cases are for the "
                               "code recipe)", field)
    return value
