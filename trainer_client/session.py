"""What both async clients are: the router's settings, a transport opened on first use, and calls under the
one retry and deadline rule (``retry.py``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from trainer_client import retry
from trainer_client.config import ClientConfig
from trainer_client.jsonio import dumps
from trainer_client.transports import Transport, check_kind, make_transport

S = TypeVar("S", bound="RouterSession")


class RouterSession:
    """``transport``: ``auto`` uses aiohttp when installed (several times less overhead per request), else
    httpx. The transport is opened on first use, so it belongs to the event loop that uses it, and it is closed
    when that loop shuts down (``asyncio.run``'s end) if ``aclose`` was not called: no "Unclosed client
    session" from a client that was never closed."""

    def __init__(self, base_url: str | None, *, api_key: str | None, timeout_s: float, max_retries: int,
                 max_connections: int, transport: str):
        check_kind(transport)
        self.config = ClientConfig.resolve(base_url, api_key, timeout_s, max_retries, max_connections)
        self.transport = transport
        self._http: Transport | None = None
        self._closer: AsyncGenerator[None, None] | None = None

    async def _transport(self) -> Transport:
        if self._http is None:
            self._http = make_transport(self.transport, self.config)
            self._closer = _closed_with_the_loop(self)
            await self._closer.__anext__()  # parked: the loop now tracks it
        return self._http

    async def _call(self, method: str, path: str, body: Any = None, affinity: str | None = None) -> Any:
        """``body`` as JSON (encoded once, whatever the retries) through the retry rule; the answer's JSON."""
        content = None if body is None else dumps(body)
        return await retry.call(await self._transport(), self.config, method, path, content, affinity)

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def __aenter__(self: S) -> S:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _closed_with_the_loop(session: RouterSession) -> AsyncGenerator[None, None]:
    """Parked at its ``yield`` for the life of the loop: when the loop shuts down (``asyncio.run`` calls
    ``shutdown_asyncgens``) it is closed, and closes the session's connections on that loop; asyncio has no
    other hook for a loop's end. Closing an already closed session does nothing."""
    try:
        yield
    finally:
        await session.aclose()
