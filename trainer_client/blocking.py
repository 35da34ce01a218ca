"""The blocking clients' one mechanism: an async client run on a private event-loop thread, so a blocking
call also works from code that already runs inside an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from trainer_client.session import RouterSession

A = TypeVar("A", bound=RouterSession)
B = TypeVar("B", bound="Blocking[RouterSession]")
T = TypeVar("T")


class Blocking(Generic[A]):
    def __init__(self, client: A):
        self._async = client
        self.config = client.config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"genrm-{type(self).__name__}",
                                        daemon=True)
        self._thread.start()

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        """``make()`` awaited on the client's loop (made there, as an async generator's step must be)."""
        return asyncio.run_coroutine_threadsafe(_await(make), self._loop).result()

    def _iterate(self, agen: AsyncGenerator[T, None]) -> Iterator[T]:
        """An async generator of the client's, step by step on its loop; closed there when left early."""
        try:
            while True:
                try:
                    yield self._run(agen.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose)

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.aclose)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self: B) -> B:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _await(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
