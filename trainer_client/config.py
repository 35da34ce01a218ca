"""Where a client connects and within what limits: the router's URL, the API key, the deadline of one call,
the retries it may make and the connections it may open."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit


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
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            where = "base_url" if base_url else "GENRM_URL"
            raise ValueError(f"{where} must be an http:// or https:// URL such as http://127.0.0.1:9000, got {url!r}")
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number") from None
        url = url.rstrip("/").removesuffix("/v1")
        return cls(url, api_key or os.environ.get("GENRM_API_KEY"), timeout_s, max_retries, max_connections)

    def auth_headers(self) -> dict[str, str]:
        """The headers every request carries: the API key, when there is one."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
