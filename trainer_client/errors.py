"""Errors the client raises: each names the URL, the HTTP status (if any) and the attempts made."""

from __future__ import annotations


class GenRMError(RuntimeError):
    def __init__(self, message: str, *, url: str, status: int | None = None, attempts: int = 1):
        self.message, self.url, self.status, self.attempts = message, url, status, attempts
        said = f"status {status}, " if status is not None else ""
        where = f"{url} ({said}{attempts} attempt{'s' if attempts != 1 else ''})"
        super().__init__(f"{message} — {where}")
