"""Recipes: how a sample becomes a score. One module each behind :class:`Recipe`, and this registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.genrm_server.recipes.base import Judge, JudgeReply, Recipe, RecipeInputError, UnknownRecipe
from services.genrm_server.recipes.custom import load_custom_recipes
from services.genrm_server.recipes.disrm import DisRMRecipe
from services.genrm_server.recipes.fapo import FapoRecipe
from services.genrm_server.recipes.fapo_judge_train import FapoJudgeTrainRecipe
from services.genrm_server.recipes.genrm_verdict import VerdictRecipe
from services.genrm_server.recipes.math_recipe import MathRecipe

if TYPE_CHECKING:
    from services.genrm_server.cpu_pool import CpuPool
    from services.genrm_server.settings import ServerSettings

RECIPES: dict[str, type[Recipe]] = {
    r.name: r for r in (MathRecipe, FapoRecipe, VerdictRecipe, FapoJudgeTrainRecipe, DisRMRecipe)
}


def create_recipes(settings: ServerSettings, pool: CpuPool | None = None) -> dict[str, Recipe]:
    """Instantiate every recipe with the server's settings, plus the custom ones of ``recipes_file``."""
    recipes: dict[str, Recipe] = {
        MathRecipe.name: MathRecipe(settings.math_mode, pool, settings.math_verify_timeout_s),
        FapoRecipe.name: FapoRecipe(settings.judge_max_tokens, settings.fapo_flaw_penalty),
        VerdictRecipe.name: VerdictRecipe(settings.judge_max_tokens),
        FapoJudgeTrainRecipe.name: FapoJudgeTrainRecipe(),
        DisRMRecipe.name: DisRMRecipe(),
    }
    if settings.recipes_file:  # custom judge recipes from YAML; their names never clash with the built-ins
        recipes.update((r.name, r) for r in load_custom_recipes(settings.recipes_file))
    return recipes


__all__ = ["RECIPES", "Judge", "JudgeReply", "Recipe", "RecipeInputError", "UnknownRecipe", "create_recipes"]
