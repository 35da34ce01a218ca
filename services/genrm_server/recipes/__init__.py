"""Recipes: how a sample becomes a score. One module each behind :class:`Recipe`, and this registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.genrm_server.recipes.base import Judge, JudgeReply, Recipe, RecipeInputError, UnknownRecipe
from services.genrm_server.recipes.code import CodeDefaults, CodeRecipe
from services.genrm_server.recipes.custom import load_custom_recipes
from services.genrm_server.recipes.disrm import DisRMRecipe
from services.genrm_server.recipes.fapo import FapoRecipe
from services.genrm_server.recipes.fapo_judge_train import FapoJudgeTrainRecipe
from services.genrm_server.recipes.genrm_verdict import VerdictRecipe
from services.genrm_server.recipes.math_recipe import MathRecipe

if TYPE_CHECKING:
    from services.genrm_server.cpu_pool import CpuPool
    from services.genrm_server.settings import ServerSettings
    from services.sandbox.session import SessionFactory

RECIPES: dict[str, type[Recipe]] = {
    r.name: r for r in (MathRecipe, FapoRecipe, VerdictRecipe, FapoJudgeTrainRecipe, DisRMRecipe, CodeRecipe)
}


def create_recipes(settings: ServerSettings, pool: CpuPool | None = None,
                   sandbox: SessionFactory | None = None) -> dict[str, Recipe]:
    """The recipes this server serves, with its settings: the judge recipes where there is a model (and the
    custom ones of ``recipes_file``), the code recipe where there is a sandbox, the math rule everywhere."""
    recipes: dict[str, Recipe] = {MathRecipe.name: MathRecipe(settings.math_mode, pool, settings.math_verify_timeout_s)}
    if settings.has_model:
        recipes.update({
            FapoRecipe.name: FapoRecipe(settings.judge_max_tokens, settings.fapo_flaw_penalty),
            VerdictRecipe.name: VerdictRecipe(settings.judge_max_tokens),
            FapoJudgeTrainRecipe.name: FapoJudgeTrainRecipe(),
            DisRMRecipe.name: DisRMRecipe(),
        })
        if settings.recipes_file:  # custom judge recipes from YAML; their names never clash with the built-ins
            recipes.update((r.name, r) for r in load_custom_recipes(settings.recipes_file))
    if sandbox is not None:
        recipes[CodeRecipe.name] = CodeRecipe(sandbox, code_defaults(settings), settings.sandbox_isolation)
    return recipes


def code_defaults(settings: ServerSettings) -> CodeDefaults:
    from services.sandbox.session import Limits

    limits = Limits(wall_s=settings.code_run_timeout_s, memory_mb=settings.code_memory_limit_mb,
                    compile_s=settings.code_compile_timeout_s)
    return CodeDefaults(scoring=settings.code_scoring, max_tests=settings.code_max_tests or None,
                        float_tolerance=settings.code_float_tolerance, limits=limits,
                        max_run_timeout_s=settings.code_max_run_timeout_s,
                        max_memory_mb=settings.code_max_memory_limit_mb,
                        max_program_bytes=settings.code_max_program_bytes)


__all__ = ["RECIPES", "Judge", "JudgeReply", "Recipe", "RecipeInputError", "UnknownRecipe", "code_defaults",
           "create_recipes"]
