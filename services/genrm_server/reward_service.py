"""Scoring samples with recipes: one sample, a batch with item-level errors, metrics, overlong shaping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from services.genrm_server.cpu_pool import CpuPool
from services.genrm_server.engines import Engine
from services.genrm_server.errors import describe_error
from services.genrm_server.metrics import RewardMetrics
from services.genrm_server.recipes import Judge, Recipe, RecipeInputError, UnknownRecipe, create_recipes
from services.genrm_server.recipes.overlong import apply_overlong
from services.genrm_server.result_cache import CoalescingCache, digest
from services.genrm_server.settings import ServerSettings
from services.sandbox.session import SandboxFailure
from trainer_client.protocol import RewardRequest, error_info

log = logging.getLogger("genrm.rewards")


class RewardService:
    def __init__(self, settings: ServerSettings, engine: Engine, metrics: RewardMetrics, sandbox: Any = None):
        self.pool = CpuPool()
        self.recipes: dict[str, Recipe] = create_recipes(settings, self.pool, sandbox)
        self.cache = CoalescingCache(settings.reward_cache_size)
        self.default = settings.recipe
        self.metrics = metrics
        self.judge = Judge(engine, metrics.on_judge_reply, settings.judge_timeout_s)
        # Judge calls of one batch are bounded so a 10k-item batch cannot flood the engine's queue at once.
        self.batch_concurrency = max(64, settings.max_batch_size * 2)

    def recipe(self, name: str | None) -> Recipe:
        name = name or self.default
        try:
            return self.recipes[name]
        except KeyError:
            raise UnknownRecipe(name, list(self.recipes)) from None

    async def score(self, sample: RewardRequest) -> dict[str, Any]:
        recipe = self.recipe(sample.recipe)
        result = self._score_inline(recipe, vars(sample))  # a model's __dict__: its fields, every one set
        if result is None:
            try:
                result = apply_overlong(vars(sample), await self._score_cached(recipe, sample), recipe.overlong)
            except (RecipeInputError, SandboxFailure) as exc:
                self.metrics.samples.labels(recipe=recipe.name, outcome="error").inc()
                if isinstance(exc, SandboxFailure):
                    self.metrics.sandbox_failures.inc()
                raise
        self.metrics.on_result(recipe.name, result)
        return result

    def _score_inline(self, recipe: Recipe, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """The result when the recipe can compute it at once (``Recipe.score_inline``), else None."""
        if recipe.uses_judge:
            return None
        try:
            result = recipe.score_inline(fields)
            return None if result is None else apply_overlong(fields, result, recipe.overlong)
        except RecipeInputError:
            self.metrics.samples.labels(recipe=recipe.name, outcome="error").inc()
            raise

    async def _score_cached(self, recipe: Recipe, sample: RewardRequest) -> dict[str, Any]:
        if not recipe.uses_judge:
            return await recipe.score(sample, self.judge)
        extra = sample.extra_info if recipe.extra_keys is None else {
            k: sample.extra_info.get(k) for k in recipe.extra_keys
        }
        key = digest(recipe.name, sample.question, sample.solution, sample.ground_truth, sample.return_critique, extra)
        result, outcome = await self.cache.get_or_run(
            key, lambda: recipe.score(sample, self.judge), cacheable=lambda r: r.get("judge_ok") is not False
        )
        if outcome != "miss":
            self.metrics.cache_hits.labels(recipe=recipe.name, kind=outcome).inc()
        return result

    async def score_batch(self, raw: list[dict[str, Any]] | list[RewardRequest], *,
                          validated: bool = False) -> list[dict[str, Any]]:
        """Items as ``RewardBatchItem``-shaped dicts, in order; one sample's error never fails the batch.

        ``raw``: request dicts (each validated here; a bad one is an item error), RewardRequests, or with
        ``validated`` the ``RewardFields`` dicts of an already validated batch. Samples of recipes without
        a judge are scored inline, one after the other: they never wait, and a task per sample cost more
        than the math rule itself. Judge calls run concurrently, bounded.
        """
        items: list[dict[str, Any] | None] = [None] * len(raw)
        waiting: list[tuple[int, RewardRequest]] = []  # judge calls (and pool work): run concurrently below
        done: dict[str, list[dict[str, Any]]] = {}  # recipe -> results scored inline, counted once at the end
        for index, item in enumerate(raw):
            try:
                if validated:
                    fields, sample = item, None
                elif not isinstance(item, (dict, RewardRequest)):
                    raise RecipeInputError(f"a sample must be a JSON object, got {_json_type(item)}",
                                           f"samples.{index}")
                else:
                    sample = item if isinstance(item, RewardRequest) else RewardRequest.model_validate(item)
                    fields = vars(sample)
                recipe = self.recipe(fields["recipe"])
                result = self._score_inline(recipe, fields)
                if result is None:  # a judged sample: worth its model (ms of judging against 2 us)
                    waiting.append((index, sample if sample is not None else RewardRequest.model_validate(fields)))
                else:
                    done.setdefault(recipe.name, []).append(result)
                    items[index] = {"index": index, "result": result, "error": None}
            except Exception as exc:
                items[index] = _item_error(index, exc)
        for name, results in done.items():
            self.metrics.on_results(name, results)
        if waiting:
            gate = asyncio.Semaphore(self.batch_concurrency)

            async def one(index: int, sample: RewardRequest) -> None:
                try:
                    async with gate:
                        items[index] = {"index": index, "result": await self.score(sample), "error": None}
                except Exception as exc:
                    items[index] = _item_error(index, exc)

            await asyncio.gather(*(one(i, s) for i, s in waiting))
        return items  # type: ignore[return-value]

    def close(self) -> None:
        self.pool.shutdown()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "an array"}.get(type(value), "a number")


def _item_error(index: int, exc: Exception) -> dict[str, Any]:
    status, message, param = describe_error(exc)
    return {"index": index, "result": None, "error": error_info(status, message, param=param).model_dump()}
