"""The transport interface both clients send through, and its two implementations: aiohttp when it is
installed, else httpx (a hard dependency).

A transport sends one request and returns the whole answer, as httpx's ``AsyncBaseTransport`` does: no
retries, no decoding (``retry.py`` does both). It sorts failures into two kinds: ``Retryable`` (refused,
dropped, reset, no connection in time: the router restarting) and ``TimedOut`` (no answer in the time given).
aiohttp is preferred because it costs far less per request: measured on this 2-core machine, a GRPO batch of
4,096 math samples took 40 ms with aiohttp and 63 ms with httpx, and single calls ran at ~4,000/s against
~600/s (docs/benchmarks.md). Trainers have it anyway (verl, Ray and OpenRLHF depend on it).
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import socket
from collections.abc import Mapping
from typing import NamedTuple, Protocol

import httpx

from trainer_client.config import ClientConfig

KINDS = ("auto", "aiohttp", "httpx")
CONNECT_TIMEOUT_S = 10.0  # connecting may take this much of an attempt's time at most


class Answer(NamedTuple):
    status: int
    headers: Mapping[str, str]  # case-insensitive in both libraries
    body: bytes


class Retryable(Exception):
    """The request did not get an answer for a reason worth another attempt; the message says why in words."""

    @classmethod
    def of(cls, exc: BaseException, url: str) -> Retryable:
        return cls(describe_failure(exc, url))


def describe_failure(exc: BaseException, url: str) -> str:
    """One line a person understands, from an exception of either library (the OSError beneath, if any)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"cannot connect to {url} (cannot resolve the host name)"
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return f"cannot connect to {url} (connection refused)"
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"cannot connect to {url} (no route to host)"
        cause = getattr(cause, "os_error", None) or cause.__cause__ or cause.__context__
    name = type(exc).__name__
    if "Timeout" in name:
        return f"cannot connect to {url} (no connection within the time allowed)"
    if "Connect" in name:
        return f"cannot connect to {url} ({exc})"
    return f"connection to {url} lost ({name}: {exc})"


class TimedOut(Exception):
    """The answer did not come within the time given."""


class Transport(Protocol):
    async def send(self, method: str, path: str, content: bytes | None, headers: dict[str, str],
                   timeout_s: float) -> Answer: ...

    async def aclose(self) -> None: ...


class HttpxTransport:
    def __init__(self, config: ClientConfig):
        limits = httpx.Limits(max_connections=config.max_connections,
                              max_keepalive_connections=config.max_connections)
        self.base_url = config.base_url
        self.client = httpx.AsyncClient(base_url=config.base_url, headers=config.auth_headers(), limits=limits)

    async def send(self, method: str, path: str, content: bytes | None, headers: dict[str, str],
                   timeout_s: float) -> Answer:
        timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        try:
            response = await self.client.request(method, path, content=content, headers=headers, timeout=timeout)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Retryable.of(exc, self.base_url) from exc
        except httpx.TimeoutException as exc:
            raise TimedOut(repr(exc)) from exc
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise Retryable.of(exc, self.base_url) from exc
        return Answer(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpTransport:
    def __init__(self, config: ClientConfig):
        import aiohttp

        self._aiohttp = aiohttp
        self.base_url = config.base_url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.max_connections, keepalive_timeout=4),
            headers=config.auth_headers(), skip_auto_headers=("User-Agent",),
        )

    async def send(self, method: str, path: str, content: bytes | None, headers: dict[str, str],
                   timeout_s: float) -> Answer:
        aiohttp = self._aiohttp
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(CONNECT_TIMEOUT_S, timeout_s))
        try:
            async with self.session.request(method, self.base_url + path, data=content, headers=headers,
                                            timeout=timeout) as response:
                return Answer(response.status, response.headers, await response.read())
        except aiohttp.ConnectionTimeoutError as exc:  # before ServerTimeoutError: connecting is retryable
            raise Retryable.of(exc, self.base_url) from exc
        except asyncio.TimeoutError as exc:  # the builtin TimeoutError only from Python 3.11 on
            raise TimedOut(repr(exc)) from exc
        except aiohttp.ClientError as exc:  # refused, reset, dropped before the whole answer
            raise Retryable.of(exc, self.base_url) from exc

    async def aclose(self) -> None:
        await self.session.close()


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"transport must be {', '.join(KINDS[:-1])} or {KINDS[-1]}, got {kind!r}")


def make_transport(kind: str, config: ClientConfig) -> Transport:
    """``auto``: aiohttp when installed, else httpx. Call it on the event loop that will use the transport."""
    check_kind(kind)
    if kind == "auto":
        kind = "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx"
    return AiohttpTransport(config) if kind == "aiohttp" else HttpxTransport(config)
