"""Reward clients for trainers: score one sample, a batch, or stream results as they finish.

- Every call follows the one retry and deadline rule (``retry.py``): a deadline (``timeout_s``) that is also
  sent to the router (``X-GenRM-Timeout``); connect errors, dropped connections (a router restart) and
  429/502/503/504 retried with back-off, honouring ``Retry-After``, within that deadline.
- What a failure becomes is explicit (``on_failure``): ``raise`` (default) a :class:`GenRMError`
  naming the URL, status and attempts; ``rule_only`` the math rule computed locally, flagged
  ``reward_source = "fallback"``; ``none`` a None (TRL drops such samples). Never a silent 0.

:class:`RewardClient` is the blocking facade: it runs the async client on a private event-loop
thread, so it also works from code that already runs inside an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, get_args

from pydantic import TypeAdapter, ValidationError

from trainer_client.blocking import Blocking
from trainer_client.errors import GenRMError
from trainer_client.grouping import group_key
from trainer_client.jsonio import dumps
from trainer_client.math_rule import compute_math
from trainer_client.protocol import GroundTruth
from trainer_client.session import RouterSession

log = logging.getLogger("genrm.client")

# raise: GenRMError; rule_only: the math rule here, flagged; none: None; error: the GenRMError as the result
# (not raised), for tools that report each sample's failure (genrm score).
FailurePolicy = Literal["raise", "rule_only", "none", "error"]
Mode = Literal["auto", "batch", "single"]
Result = dict[str, Any] | GenRMError | None

POLICIES: tuple[str, ...] = get_args(FailurePolicy)
MODES: tuple[str, ...] = get_args(Mode)


def fallback_result(sample: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The math rule computed here, flagged: what ``on_failure="rule_only"`` returns."""
    truth = _label(sample.get("ground_truth"))
    solution = sample.get("solution", sample.get("response", sample.get("solution_str", "")))
    result = compute_math(str(solution or ""), truth or "").to_dict()
    if not truth:  # the server refuses these; here, never a +1 (an empty \boxed{} would match "")
        result.update(score=-1.0, acc=False)
    return {**result, "reward_source": "fallback", "error": str(error)}


def _label(truth: Any) -> str | None:
    """The label as the server reads it: sent as this client sends it (``jsonio.dumps``), then validated as
    ``protocol.GroundTruth`` (a number as its text, true as 1, NaN and ±Infinity as none)."""
    if truth is None or isinstance(truth, str):
        return truth
    try:
        label = _GROUND_TRUTH.validate_json(dumps(truth))
    except (ValidationError, TypeError):  # not a label the server takes (it would answer 400): its text
        return str(truth)
    return label if label is None or isinstance(label, str) else None  # test cases (code) are no math label


_GROUND_TRUTH: TypeAdapter[str | dict[str, Any] | None] = TypeAdapter(GroundTruth)


class AsyncRewardClient(RouterSession):
    """Scores samples through the router's reward API (``/v1/reward``, ``/v1/reward/batch``).

    A sample is a dict of :class:`~trainer_client.protocol.RewardRequest` fields: ``recipe``,
    ``data_source``, ``question``, ``solution``, ``ground_truth``, ``extra_info``, ``group_id``.
    ``recipe`` here is the default for samples that name none. ``transport``: ``auto`` uses aiohttp when
    installed (several times less overhead per request), else httpx.
    """

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, recipe: str | None = None,
                 timeout_s: float = 600.0, max_retries: int = 4, concurrency: int = 64,
                 on_failure: FailurePolicy = "raise", progress: bool | None = None, mode: Mode = "auto",
                 batch_size: int = 256, transport: str = "auto"):
        if on_failure not in POLICIES:
            raise ValueError(f"on_failure must be one of {', '.join(POLICIES)}, got {on_failure!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be >= 1")
        super().__init__(base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries,
                         max_connections=concurrency, transport=transport)
        self.recipe, self.on_failure, self.progress = recipe, on_failure, progress
        self.concurrency, self.mode, self.batch_size = concurrency, mode, batch_size

    # -- public API ---------------------------------------------------------------------------

    async def score(self, sample: dict[str, Any]) -> Result:
        """One sample's result dict (``score`` plus the recipe's keys)."""
        return await self._score_body(self._prepare(sample))

    async def score_batch(self, samples: Sequence[dict[str, Any]], *, concurrency: int | None = None,
                          progress: bool | None = None) -> list[Result]:
        """Results in the order of ``samples``. ``mode="batch"`` (and ``auto``) sends chunks of
        ``batch_size`` to ``/v1/reward/batch`` (the router fans them out by group); ``single`` sends
        one request per sample, ``concurrency`` at a time."""
        bodies = [self._prepare(s) for s in samples]
        results: list[Result] = [None] * len(bodies)
        bar = _progress_bar(len(bodies), self.progress if progress is None else progress)
        limit = asyncio.Semaphore(concurrency or self.concurrency)
        try:
            if self.mode == "single":
                async def one(i: int) -> None:
                    async with limit:
                        results[i] = await self._score_body(bodies[i])
                    bar(1)

                await asyncio.gather(*(one(i) for i in range(len(bodies))))
            else:
                async def chunk(key: str, indices: list[int]) -> None:
                    async with limit:
                        part = await self._score_chunk([bodies[i] for i in indices], key)
                    for i, result in zip(indices, part, strict=True):
                        results[i] = result
                    bar(len(part))

                await asyncio.gather(*(chunk(k, ix) for k, ix in _group_chunks(bodies, self.batch_size)))
        finally:
            bar(0, close=True)
        return results

    async def as_completed(self, samples: Sequence[dict[str, Any]], *,
                           concurrency: int | None = None) -> AsyncIterator[tuple[int, Result]]:
        """Yield ``(index, result)`` as each sample's score arrives (for fully asynchronous trainers)."""
        limit = asyncio.Semaphore(concurrency or self.concurrency)

        async def one(i: int, body: dict[str, Any]) -> tuple[int, Result]:
            async with limit:
                return i, await self._score_body(body)

        tasks = [asyncio.ensure_future(one(i, self._prepare(s))) for i, s in enumerate(samples)]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            for task in tasks:
                task.cancel()

    async def recipes(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/recipes")

    # -- internals ----------------------------------------------------------------------------

    def _prepare(self, sample: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(sample, dict):
            raise TypeError(f"a sample is a dict of reward fields, got {type(sample).__name__}")
        if self.recipe and not sample.get("recipe"):
            return {**sample, "recipe": self.recipe}
        return sample

    async def _score_body(self, body: dict[str, Any]) -> Result:
        try:
            return await self._call("POST", "/v1/reward", body)
        except GenRMError as exc:
            return self._failed(body, exc)

    async def _score_chunk(self, bodies: list[dict[str, Any]], key: str) -> list[Result]:
        try:
            payload = await self._call("POST", "/v1/reward/batch", {"samples": bodies}, affinity=key)
        except GenRMError as exc:
            return [self._failed(b, exc) for b in bodies]
        out: list[Result] = []
        for body, item in zip(bodies, payload["results"], strict=True):
            if item.get("error"):
                err = item["error"]
                exc = GenRMError(f"sample failed: {err.get('message')}", url=self.config.base_url + "/v1/reward/batch",
                                 status=err.get("code"), attempts=1)
                out.append(self._failed(body, exc))
            else:
                out.append(item["result"])
        return out

    def _failed(self, body: dict[str, Any], exc: GenRMError) -> Result:
        if self.on_failure == "raise":
            raise exc
        if self.on_failure == "error":
            return exc
        log.warning("reward call failed (%s): %s", self.on_failure, exc)
        return fallback_result(body, exc) if self.on_failure == "rule_only" else None


class RewardClient(Blocking[AsyncRewardClient]):
    """Blocking reward client: the async client on a private event-loop thread (safe inside a loop)."""

    def __init__(self, base_url: str | None = None, **options: Any):
        super().__init__(AsyncRewardClient(base_url, **options))

    def score(self, sample: dict[str, Any]) -> Result:
        return self._run(lambda: self._async.score(sample))

    def score_batch(self, samples: Sequence[dict[str, Any]], **options: Any) -> list[Result]:
        return self._run(lambda: self._async.score_batch(samples, **options))

    def as_completed(self, samples: Sequence[dict[str, Any]], **options: Any) -> Iterator[tuple[int, Result]]:
        """Yield ``(index, result)`` as results arrive."""
        return self._iterate(self._async.as_completed(samples, **options))

    def recipes(self) -> dict[str, Any]:
        return self._run(self._async.recipes)


def _group_chunks(bodies: list[dict[str, Any]], size: int) -> list[tuple[str, list[int]]]:
    """Chunks of about ``size`` samples that never split a GRPO group (``grouping.group_key``), each named by
    its first group's key: the router routes a keyed chunk whole, without
    parsing it, and keeps each group's samples on one replica (one prefix-cache fill)."""
    groups: dict[str, list[int]] = {}
    for i, body in enumerate(bodies):
        groups.setdefault(group_key(body, i), []).append(i)
    chunks: list[tuple[str, list[int]]] = []
    for key, indices in groups.items():
        if chunks and len(chunks[-1][1]) + len(indices) <= size:
            chunks[-1][1].extend(indices)
        else:
            chunks.extend((key, indices[s:s + size]) for s in range(0, len(indices), size))
    return chunks


def _progress_bar(total: int, enabled: bool | None) -> Callable[..., None]:
    """tqdm when installed and wanted (default: only on a terminal); else a no-op."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total <= 1:
        return lambda n, close=False: None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the client needs only httpx + pydantic; trainers have tqdm anyway
        return lambda n, close=False: None
    bar = tqdm(total=total, desc="rewards", unit="sample")

    def update(n: int, close: bool = False) -> None:
        if n:
            bar.update(n)
        if close:
            bar.close()

    return update
