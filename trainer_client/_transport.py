"""What the sync and async clients share: configuration, the retry rule and response decoding."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic_core import from_json

from trainer_client.errors import GenRMError

RETRY_STATUS = {429, 502, 503, 504}


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    api_key: str | None
    timeout_s: float
    max_retries: int
    max_connections: int

    @classmethod
    def resolve(
        cls, base_url: str | None, api_key: str | None, timeout_s: float, max_retries: int, max_connections: int
    ) -> ClientConfig:
        url = base_url or os.environ.get("GENRM_URL")
        if not url:
            raise ValueError("no router URL: pass base_url=... or set GENRM_URL (e.g. http://127.0.0.1:9000)")
        url = url.rstrip("/").removesuffix("/v1")
        return cls(url, api_key or os.environ.get("GENRM_API_KEY"), timeout_s, max_retries, max_connections)

    def httpx_kwargs(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {
            "base_url": self.base_url,
            "headers": headers,
            "timeout": httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
            "limits": httpx.Limits(max_connections=self.max_connections,
                                   max_keepalive_connections=self.max_connections),
        }


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    return backoff(attempt, None if response is None else response.headers)


def backoff(attempt: int, headers: Mapping[str, str] | None) -> float:
    """Back-off before retry ``attempt`` (1-based): ``Retry-After`` when given, else exponential + jitter."""
    header = headers.get("retry-after") if headers is not None else None  # case-insensitive in both libraries
    if header and header.replace(".", "", 1).isdigit():
        return min(float(header), 60.0)
    return min(0.1 * 2 ** (attempt - 1), 5.0) * (0.5 + random.random())


def decode(response: httpx.Response, attempts: int) -> Any:
    return decode_body(response.status_code, response.content, str(response.request.url), attempts)


def decode_body(status: int, body: bytes, url: str, attempts: int) -> Any:
    """The JSON of a 2xx answer, or GenRMError with the platform error's message (URL, status, attempts)."""
    if status >= 400:
        try:
            message = from_json(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body[:500].decode("utf-8", "replace")
        raise GenRMError(f"request failed: {message}", url=url, status=status, attempts=attempts)
    try:
        return from_json(body)  # numbers exact (orjson would read a big integer as a float: jsonio.py)
    except ValueError as exc:
        raise GenRMError(f"malformed JSON in response: {exc}", url=url, status=status, attempts=attempts) from exc
