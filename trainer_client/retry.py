"""The one rule every client call follows, and the loop that applies it (both clients, every route).

- Deadline: ``timeout_s`` bounds the whole call, retries and back-off included. Each attempt may take what is
  left of it (connecting at most ``transports.CONNECT_TIMEOUT_S`` of that), and the router is told the same in
  ``X-GenRM-Timeout``, so no layer waits longer than the trainer will.
- Retried, at most ``max_retries`` times: refused, reset or dropped connections, no connection in time, and
  429/502/503/504. An attempt that got no answer in time is not retried: the deadline is spent.
- Back-off: ``Retry-After`` when the answer gives one (at most 60 s), else 0.1 s doubling up to 5 s, times a
  jitter of 0.5-1.5; never past the deadline.
- The result: the answer's JSON, or :class:`GenRMError` naming the URL, the status and the attempts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any

from pydantic_core import from_json

from trainer_client.config import ClientConfig
from trainer_client.errors import GenRMError
from trainer_client.transports import Retryable, TimedOut, Transport

RETRY_STATUS = frozenset({429, 502, 503, 504})


async def call(transport: Transport, config: ClientConfig, method: str, path: str, content: bytes | None,
               affinity: str | None = None) -> Any:
    """One call with retries inside the deadline (``content``: the JSON body, encoded once); GenRMError when it
    cannot succeed. ``affinity`` is sent as ``X-Affinity-Key`` (the router routes such a batch whole)."""
    deadline = time.monotonic() + config.timeout_s
    url = config.base_url + path
    attempt, status, last = 0, None, "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GenRMError(f"deadline of {config.timeout_s:g}s passed (last: {last})", url=url, status=status,
                             attempts=attempt)
        attempt += 1
        headers = {"x-genrm-timeout": f"{max(remaining, 0.001):.3f}"}  # the router refuses 0
        if content is not None:
            headers["content-type"] = "application/json"
        if affinity is not None:
            headers["x-affinity-key"] = affinity
        answer_headers = None
        try:
            status, answer_headers, body = await transport.send(method, path, content, headers, remaining)
        except TimedOut as exc:
            raise GenRMError(f"no answer within the deadline of {config.timeout_s:g}s", url=url, status=status,
                             attempts=attempt) from exc
        except Retryable as exc:
            last = str(exc)
        else:
            if status not in RETRY_STATUS:
                return decode_body(status, body, url, attempt)
            last = f"status {status}: {error_message(body)}"
        if attempt > config.max_retries:
            raise GenRMError(f"gave up after {attempt} attempts (last: {last})", url=url, status=status,
                             attempts=attempt)
        await asyncio.sleep(min(backoff(attempt, answer_headers), max(0.0, deadline - time.monotonic())))


def backoff(attempt: int, headers: Mapping[str, str] | None) -> float:
    """Back-off before retry ``attempt`` (1-based): ``Retry-After`` when given, else exponential + jitter."""
    header = headers.get("retry-after") if headers is not None else None  # case-insensitive in both libraries
    if header and header.replace(".", "", 1).isdigit():
        return min(float(header), 60.0)
    return min(0.1 * 2 ** (attempt - 1), 5.0) * (0.5 + random.random())


def decode_body(status: int, body: bytes, url: str, attempts: int) -> Any:
    """The JSON of a 2xx answer, or GenRMError with the platform error's message (URL, status, attempts)."""
    if status >= 400:
        raise GenRMError(f"request failed: {error_message(body)}", url=url, status=status, attempts=attempts)
    try:
        return from_json(body)  # numbers exact (orjson would read a big integer as a float: jsonio.py)
    except ValueError as exc:
        raise GenRMError(f"malformed JSON in response: {exc}", url=url, status=status, attempts=attempts) from exc


def error_message(body: bytes) -> str:
    """An error answer's message: the platform's ``{"error": {"message"}}``, else the body's first 500 bytes."""
    try:
        return str(from_json(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:500].decode("utf-8", "replace")
