"""Run the ``n`` choices of one request on the engine and merge their deltas into one stream."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.genrm_server.engines import Delta, Engine, GenerationInput, SamplingParams


@dataclass
class ChoiceResult:
    """A finished choice: all of its text plus the last delta's finish data."""

    index: int
    text: list[str] = field(default_factory=list)
    final: Delta | None = None


def choice_params(params: SamplingParams, i: int) -> SamplingParams:
    # Choice i of a seeded request uses seed+i: reproducible, yet the choices differ.
    return params if params.seed is None or i == 0 else dataclasses.replace(params, seed=params.seed + i)


class MergedChoices:
    """Async iterator of ``(choice_index, Delta)`` over several engine generations.

    :meth:`first` awaits the first event so engine input errors surface before a response starts;
    :meth:`aclose` cancels whatever is still running (the engines free the slots).
    """

    def __init__(self, engine: Engine, jobs: list[tuple[GenerationInput, SamplingParams]]):
        self._queue: asyncio.Queue[tuple[int, Delta | BaseException | None]] = asyncio.Queue()
        self._open = len(jobs)
        self._tasks = [
            asyncio.create_task(self._pump(i, engine.generate(inp, p))) for i, (inp, p) in enumerate(jobs)
        ]
        self._peeked: tuple[int, Delta] | None = None

    async def _pump(self, index: int, stream: AsyncIterator[Delta]) -> None:
        try:
            async for delta in stream:
                await self._queue.put((index, delta))
            await self._queue.put((index, None))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._queue.put((index, exc))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def first(self) -> None:
        self._peeked = await self.__anext__()

    def __aiter__(self) -> MergedChoices:
        return self

    async def __anext__(self) -> tuple[int, Delta]:
        if self._peeked is not None:
            item, self._peeked = self._peeked, None
            return item
        while self._open:
            index, item = await self._queue.get()
            if item is None:
                self._open -= 1
                continue
            if isinstance(item, BaseException):
                await self.aclose()
                raise item
            return index, item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def collect(self, count: int) -> list[ChoiceResult]:
        """Drain to completion; results by choice index."""
        results = [ChoiceResult(i) for i in range(count)]
        try:
            async for index, delta in self:
                results[index].text.append(delta.text)
                if delta.finish_reason is not None:
                    results[index].final = delta
        finally:
            await self.aclose()
        return results
