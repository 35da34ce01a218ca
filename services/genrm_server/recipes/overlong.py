"""DAPO overlong shaping, opt-in per request (``overlong``). verl's DAPO reward manager applies it itself
on the trainer side, so it stays off unless asked for: it must never be applied twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from services.genrm_server.recipes.base import RecipeInputError
from trainer_client.protocol import OverlongShaping


def overlong_penalty(length: int, shaping: OverlongShaping) -> float:
    """``min(-(n - (max_resp_len - L)) / L * f, 0)`` for a response of ``n`` tokens."""
    expected = shaping.max_resp_len - shaping.buffer_len
    return min(-(length - expected) / shaping.buffer_len * shaping.penalty_factor, 0.0)


def apply_overlong(
    fields: Mapping[str, Any], result: dict[str, Any], default: OverlongShaping | None = None
) -> dict[str, Any]:
    """Add the penalty when the request (or else the recipe, ``default``) asks for shaping. ``fields``: the
    sample's ``RewardFields`` (``vars(request)`` for a model)."""
    shaping = fields["overlong"] or default
    if shaping is None:
        return result
    length = fields["extra_info"].get("response_length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise RecipeInputError(
            "overlong shaping needs extra_info.response_length (the response's token count, an integer >= 0)",
            "extra_info.response_length",
        )
    # Huge lengths or factors must not make the score ±inf (JSON null: a 200 without a score) or raise
    # OverflowError (int / int past float range: a 500); say which input did it instead.
    try:
        penalty = overlong_penalty(length, shaping)
    except OverflowError:
        penalty = -math.inf
    if not math.isfinite(result["score"] + penalty):
        raise RecipeInputError("the overlong penalty overflows: extra_info.response_length or "
                               "overlong.penalty_factor is too large", "extra_info.response_length")
    return {**result, "score": result["score"] + penalty, "overlong_penalty": penalty}
