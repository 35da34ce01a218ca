"""What the sync and async clients share: configuration, the retry rule and response decoding."""

from __future__ import annotations

import os
import random
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
    """Back-off before retry ``attempt`` (1-based): ``Retry-After`` when given, else exponential + jitter."""
    if response is not None:
        header = response.headers.get("retry-after")
        if header and header.replace(".", "", 1).isdigit():
            return min(float(header), 60.0)
    return min(0.1 * 2 ** (attempt - 1), 5.0) * (0.5 + random.random())


def decode(response: httpx.Response, attempts: int) -> Any:
    url = str(response.request.url)
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        raise GenRMError(f"request failed: {message}", url=url, status=response.status_code, attempts=attempts)
    try:
        return from_json(response.content)  # pydantic-core's Rust decoder: big batches decode several x faster
    except ValueError as exc:
        raise GenRMError(f"malformed JSON in response: {exc}", url=url, status=response.status_code,
                         attempts=attempts) from exc
