"""Checking an error answer: OpenAI's envelope with the expected status, the field it names and words of its message."""

from __future__ import annotations

import httpx


def expect_error(resp: httpx.Response, status: int, param: str | None, *words: str) -> dict:
    assert resp.status_code == status, resp.text[:500]
    error = resp.json()["error"]
    assert error["code"] == status and error["param"] == param, error
    for word in words:
        assert word in error["message"], error["message"]
    return error
