"""The blocking clients' one mechanism: an async client run on a private event-loop thread, so a blocking
call also works from code that already runs inside an event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
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
        # Runs on close(), or at exit for a client never closed: connections closed, the loop stopped and closed.
        self._finalizer = weakref.finalize(self, _shut_down, self._loop, self._thread, client)

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
        self._finalizer()

    def __enter__(self: B) -> B:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _await(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def _shut_down(loop: asyncio.AbstractEventLoop, thread: threading.Thread, client: RouterSession) -> None:
    if loop.is_running():
        with contextlib.suppress(Exception):  # a client that cannot close cleanly must not raise here
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=10)
            asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    if not loop.is_running() and not loop.is_closed():
        loop.close()
