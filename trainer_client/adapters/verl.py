"""verl integration: ``compute_score`` (sync), ``compute_score_async`` and ``compute_score_batch``.

    custom_reward_function:            # verl >= 0.9: reward.custom_reward_function
      path: <site-packages>/trainer_client/adapters/verl.py
      name: compute_score              # or compute_score_async (reward-loop / agent-loop managers only),
                                       # or compute_score_batch (reward_manager=batch)
      reward_kwargs: {genrm_url: "http://router:9000", recipe: math, on_failure: raise}

verl calls ``compute_score``/``compute_score_async`` once per sample as ``fn(data_source=, solution_str=,
ground_truth=, extra_info=, **reward_kwargs)`` (some managers add their own keyword arguments, e.g.
``reward_router_address``: they are ignored). Its ``batch`` manager calls ``compute_score_batch`` once per batch
(``data_sources=, solution_strs=, ground_truths=, extra_infos=``): for a GenRM judge pick ``batch`` (legacy
managers) or the reward loop with ``compute_score_async``: a sequential manager calling the sync function once
per sample waits for each judge call in turn and cannot use the platform's concurrency.

Settings, each a ``reward_kwargs`` key or else an environment variable:

- ``genrm_url`` (alias ``url``), else ``GENRM_URL``: the router;
- ``recipe``, else ``GENRM_RECIPE``, else ``"math"``;
- ``api_key``, else ``GENRM_API_KEY``;
- ``on_failure``: ``"raise"`` (default) or ``"rule_only"`` (the math rule computed locally, flagged
  ``reward_source = "fallback"``); the client's ``"none"`` is refused: verl needs a number for every sample;
- ``timeout_s`` (600), ``max_retries`` (4); ``recipe_keys``: the key list of a custom recipe, to skip asking
  the server (``GET /v1/recipes``) for it.

The question a judge needs (FAPO) is ``extra_info["question"]`` (or ``"prompt"``, ``"problem"``): verl passes no
prompt.
The GRPO group id, which sends a group's samples to one replica, is ``extra_info["index"]`` (or ``"uid"``,
``"group_id"``): the dataset row, shared by the ``n`` rollouts of a prompt.

The result is always a dict with the same keys for every sample, because verl reads the key set from a
batch's first sample and breaks on a missing one: ``score``, the recipe's keys (``GET /v1/recipes``) and
``reward_source`` (``"remote"`` or ``"fallback"``). A fallback lacks the judge's keys; they are filled with
neutral values: ``False`` for flags (``flawed_positive``, ``judge_ok``, ``judge_asked``: no judge answered),
``None`` for values (``judge_verdict``, ``verdict``, ``parsed``, ``rm_score``; verl's metrics skip None).
-1 is never used as a filler: a FAPO ``judge_verdict`` of -1 means "the judge found no flaw". Keys outside the
recipe's set (the fallback's ``error``) are dropped.

Overlong shaping is never requested: verl's DAPO reward manager adds the overlong penalty itself.

Clients are created once per (URL, API key, recipe, failure policy, timeout, retries) and reused: the sync
ones per process, the async ones per process and running event loop (their connections belong to the loop).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from trainer_client.errors import GenRMError
from trainer_client.grouping import question_of
from trainer_client.reward_client import AsyncRewardClient, RewardClient

__all__ = ["BUILTIN_RECIPE_KEYS", "NEUTRAL_VALUES", "build_sample", "compute_score", "compute_score_async",
           "compute_score_batch"]


# The built-in recipes' key sets, as ``GET /v1/recipes`` lists them (tests/client/adapters/test_verl.py checks they
# agree): known here so a fallback has the full key set even when the router was never reachable.
BUILTIN_RECIPE_KEYS: dict[str, tuple[str, ...]] = {
    "math": ("score", "acc", "pred"),
    "fapo": ("score", "acc", "pred", "flawed_positive", "judge_verdict", "judge_ok", "judge_asked"),
    "genrm_verdict": ("score", "verdict", "judge_ok"),
    "fapo_judge_train": ("score", "pred", "judge_ok"),
    "disrm": ("score", "rm_score"),
    "code": ("score", "acc", "pass_rate", "tests_passed", "tests_total", "status"),
}
# What a fallback result gets for a recipe key it lacks (any other key: None).
NEUTRAL_VALUES: dict[str, Any] = {"acc": False, "flawed_positive": False, "judge_ok": False, "judge_asked": False}

_GROUP_KEYS = ("index", "uid", "group_id")
_POLICIES = ("raise", "rule_only")


class Settings(NamedTuple):
    """One client's settings, resolved from ``reward_kwargs`` and the environment; the client cache key.

    (A NamedTuple, not a dataclass: verl loads this file by path without registering it in ``sys.modules``,
    and ``@dataclass`` with postponed annotations fails there.)
    """

    url: str
    api_key: str | None
    recipe: str
    on_failure: str
    timeout_s: float
    max_retries: int
    recipe_keys: tuple[str, ...] | None = None

    @classmethod
    def resolve(cls, kwargs: Mapping[str, Any]) -> Settings:
        url = kwargs.get("genrm_url") or kwargs.get("url") or os.environ.get("GENRM_URL")
        if not url:
            raise ValueError("no GenRM router URL: set reward_kwargs.genrm_url (or the GENRM_URL environment variable)")
        on_failure = kwargs.get("on_failure") or "raise"
        if on_failure not in _POLICIES:
            raise ValueError(f"on_failure must be 'raise' or 'rule_only' for verl, got {on_failure!r} "
                             "(verl needs a number for every sample; 'none' would leave a hole)")
        keys = kwargs.get("recipe_keys")
        if keys is not None:
            keys = tuple(str(k) for k in keys)
            keys = keys if "score" in keys else ("score", *keys)
        return cls(
            url=str(url),
            api_key=kwargs.get("api_key") or os.environ.get("GENRM_API_KEY") or None,
            recipe=str(kwargs.get("recipe") or os.environ.get("GENRM_RECIPE") or "math"),
            on_failure=on_failure,
            timeout_s=float(kwargs.get("timeout_s") or 600.0),
            max_retries=int(kwargs["max_retries"]) if kwargs.get("max_retries") is not None else 4,
            recipe_keys=keys,
        )

    def client_options(self) -> dict[str, Any]:
        return {"api_key": self.api_key, "recipe": self.recipe, "timeout_s": self.timeout_s,
                "max_retries": self.max_retries, "on_failure": self.on_failure, "progress": False}


# -- samples and results ----------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON: verl's ``extra_info`` holds numpy scalars and arrays (``index``,
    ``num_turns``), which ``json`` refuses; non-finite floats become None, unknown objects their ``str``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return _jsonable(value.tolist())
    return str(value)


def build_sample(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None,
                 recipe: str) -> dict[str, Any]:
    """The reward request for one verl sample (never with ``overlong``: verl's DAPO manager shapes)."""
    info = _jsonable(dict(extra_info or {}))
    question = question_of(info)
    group = next((info[k] for k in _GROUP_KEYS if isinstance(info.get(k), (str, int)) and info[k] != ""), None)
    return {
        "recipe": recipe,
        "data_source": None if data_source is None else str(_jsonable(data_source)),
        "question": question,
        "solution": solution_str if isinstance(solution_str, str) else str(solution_str),
        "ground_truth": _jsonable(ground_truth),
        "extra_info": info,
        "group_id": None if isinstance(group, bool) else group,
    }


def _shape(result: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``result`` with exactly ``keys`` plus ``reward_source``, missing ones neutral, others dropped."""
    source = result.get("reward_source") or "remote"
    out = {k: result[k] if k in result else NEUTRAL_VALUES.get(k) for k in keys}
    out["score"] = float(result["score"])
    out["reward_source"] = source
    return out


# -- clients ------------------------------------------------------------------------------------------------------


class _Entry:
    """A cached client and its recipe's key set (resolved once, so every sample gets the same keys)."""

    def __init__(self, settings: Settings, client: RewardClient | AsyncRewardClient):
        self.settings, self.client = settings, client
        self.keys = settings.recipe_keys or BUILTIN_RECIPE_KEYS.get(settings.recipe)

    def keys_from(self, listing: Mapping[str, Any]) -> tuple[str, ...]:
        for recipe in listing.get("recipes", []):
            if recipe.get("name") == self.settings.recipe:
                keys = tuple(recipe["keys"])
                self.keys = keys if "score" in keys else ("score", *keys)
                return self.keys
        served = ", ".join(r.get("name", "?") for r in listing.get("recipes", []))
        raise ValueError(f"recipe {self.settings.recipe!r} is not served by {self.settings.url} (served: {served})")

    def unknown_keys(self, exc: GenRMError) -> GenRMError:
        return GenRMError(f"cannot list the keys of custom recipe {self.settings.recipe!r} (GET /v1/recipes); "
                          f"pass reward_kwargs.recipe_keys to score without the router: {exc}", url=exc.url,
                          status=exc.status, attempts=exc.attempts)


_lock = threading.Lock()
_sync: dict[tuple[int, Settings], _Entry] = {}
_async: dict[tuple[int, int, Settings], tuple[asyncio.AbstractEventLoop, _Entry]] = {}


def _sync_entry(settings: Settings) -> _Entry:
    key = (os.getpid(), settings)  # a forked child must not reuse its parent's event-loop thread
    entry = _sync.get(key)
    if entry is None:
        with _lock:
            entry = _sync.get(key)
            if entry is None:
                if not _sync:
                    atexit.register(_close_sync_clients)
                entry = _sync[key] = _Entry(settings, RewardClient(settings.url, **settings.client_options()))
    return entry


def _close_sync_clients() -> None:
    """At exit, close this process's cached clients: their connections end cleanly (no "Unclosed client
    session" from aiohttp at shutdown)."""
    pid = os.getpid()
    with _lock:
        mine = [k for k in _sync if k[0] == pid]
        entries = [_sync.pop(k) for k in mine]
    for entry in entries:
        with contextlib.suppress(Exception):  # at exit, a client that cannot close must not raise
            entry.client.close()  # type: ignore[union-attr]


async def _async_entry(settings: Settings) -> _Entry:
    """This loop's client for ``settings``; it closes its connections itself when the loop shuts down
    (``RouterSession``), so a finished ``asyncio.run`` leaves only a stale entry, dropped here."""
    loop = asyncio.get_running_loop()
    key = (os.getpid(), id(loop), settings)
    with _lock:
        cached = _async.get(key)
        if cached is not None and cached[0] is loop:
            return cached[1]
        for stale in [k for k, (lp, _) in _async.items() if lp.is_closed()]:
            del _async[stale]
        entry = _Entry(settings, AsyncRewardClient(settings.url, **settings.client_options()))
        _async[key] = (loop, entry)
    return entry


# -- the reward functions -----------------------------------------------------------------------------------------


def _sync_entry_with_keys(settings: Settings) -> _Entry:
    """This process's client for ``settings``, with the recipe's key set known (asked of the server once)."""
    entry = _sync_entry(settings)
    if entry.keys is None:
        try:
            entry.keys_from(entry.client.recipes())
        except GenRMError as exc:
            raise entry.unknown_keys(exc) from exc
    return entry


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """verl custom reward function (blocking): ``score``, the recipe's keys and ``reward_source``.

    Safe in verl's thread pools and inside a running event loop: the client runs on its own loop thread.
    """
    settings = Settings.resolve(kwargs)
    entry = _sync_entry_with_keys(settings)
    result = entry.client.score(build_sample(data_source, solution_str, ground_truth, extra_info, settings.recipe))
    return _shape(result, entry.keys)


async def compute_score_async(data_source: Any, solution_str: str, ground_truth: Any,
                              extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """verl custom reward function for the managers that await coroutines (reward loop, agent loop)."""
    settings = Settings.resolve(kwargs)
    entry = await _async_entry(settings)
    if entry.keys is None:
        try:
            entry.keys_from(await entry.client.recipes())
        except GenRMError as exc:
            raise entry.unknown_keys(exc) from exc
    result = await entry.client.score(build_sample(data_source, solution_str, ground_truth, extra_info,
                                                   settings.recipe))
    return _shape(result, entry.keys)


def compute_score_batch(data_sources: Sequence[Any], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
                        **kwargs: Any) -> list[dict[str, Any]]:
    """verl's ``batch`` reward manager's function: the whole batch in one client call, as chunks of whole GRPO
    groups that the router spreads over its workers concurrently; the same keys and failure policy as
    :func:`compute_score`, one result per sample in order."""
    settings = Settings.resolve(kwargs)
    entry = _sync_entry_with_keys(settings)
    infos = extra_infos if extra_infos is not None else [None] * len(solution_strs)
    samples = [build_sample(source, solution, truth, info, settings.recipe)
               for source, solution, truth, info in zip(data_sources, solution_strs, ground_truths, infos, strict=True)]
    return [_shape(result, entry.keys) for result in entry.client.score_batch(samples)]


if __name__ != "trainer_client.adapters.verl":
    # verl's ``custom_reward_function.path`` runs this file as an anonymous module (not in ``sys.modules``). Hand
    # out the package's own functions instead: one client cache per process, and picklable by reference (verl's
    # ``remote`` manager ships the function to Ray workers; by value, this module's lock would not pickle).
    from trainer_client.adapters.verl import compute_score, compute_score_async, compute_score_batch
