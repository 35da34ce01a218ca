"""Where a client connects and within what limits: the router's URL, the API key, the deadline of one call,
the retries it may make and the connections it may open."""

from __future__ import annotations

import os
from dataclasses import dataclass


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
        """The settings given, else ``GENRM_URL`` / ``GENRM_API_KEY``; the URL without a trailing ``/v1``."""
        url = base_url or os.environ.get("GENRM_URL")
        if not url:
            raise ValueError("no router URL: pass base_url=... or set GENRM_URL (e.g. http://127.0.0.1:9000)")
        url = url.rstrip("/").removesuffix("/v1")
        return cls(url, api_key or os.environ.get("GENRM_API_KEY"), timeout_s, max_retries, max_connections)

    def auth_headers(self) -> dict[str, str]:
        """The headers every request carries: the API key, when there is one."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
