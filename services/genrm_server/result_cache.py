"""Coalesce identical judge requests in flight and keep finished results in a bounded LRU.

GRPO samples n responses per prompt and often repeats one verbatim; a judge call costs seconds of GPU, so
identical samples share one call. Keys are SHA-256 digests of what the recipe reads (not the texts
themselves: 65k cached 3 KB solutions would be 200 MB). Failed judge results are never cached.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

Outcome = Literal["miss", "hit", "coalesced"]


def digest(*parts: Any) -> bytes:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()).digest()


class CoalescingCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._done: collections.OrderedDict[bytes, dict[str, Any]] = collections.OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def get_or_run(
        self, key: bytes, run: Callable[[], Awaitable[dict[str, Any]]], cacheable: Callable[[dict[str, Any]], bool]
    ) -> tuple[dict[str, Any], Outcome]:
        if self.capacity <= 0:
            return await run(), "miss"
        if (cached := self._done.get(key)) is not None:
            self._done.move_to_end(key)
            return dict(cached), "hit"
        if (task := self._inflight.get(key)) is not None:
            return dict(await asyncio.shield(task)), "coalesced"
        task = asyncio.ensure_future(run())
        self._inflight[key] = task
        task.add_done_callback(lambda t: self._settle(key, t, cacheable))
        # shield: one caller going away must not cancel the call the others are waiting for
        return dict(await asyncio.shield(task)), "miss"

    def _settle(self, key: bytes, task: asyncio.Future[dict[str, Any]], cacheable: Callable[[dict], bool]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled() or task.exception() is not None or not cacheable(task.result()):
            return
        self._done[key] = task.result()
        self._done.move_to_end(key)
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)
