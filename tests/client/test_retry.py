"""The one retry and deadline rule (trainer_client/retry.py), seen from outside: every client (reward and
OpenAI, blocking and async) over both transports, against a real process whose answers each test scripts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.local_stack import Child
from tests.conftest import start_script
from trainer_client import AsyncGenRMClient, AsyncRewardClient, GenRMClient, GenRMError, RewardClient

CLIENTS = ["reward", "reward-async", "openai", "openai-async"]
TRANSPORTS = ["aiohttp", "httpx"]
# An answer both routes take: a completion (the OpenAI client validates it), any dict for the reward client.
OK = {"model": "m", "choices": [{"index": 0, "text": "fine"}], "usage": {}}
SAMPLE = {"question": "What is 2?", "solution": "\\boxed{2}", "ground_truth": "2"}


@pytest.fixture(scope="module")
def scripted(logs) -> Iterator[Child]:
    child = start_script("support/scripted_router.py", log_dir=logs, name="scripted-router")
    yield child
    child.stop()


def script(router: Child, *answers: dict[str, Any], default: dict[str, Any] | None = None) -> None:
    httpx.post(router.url + "/script", json={"answers": list(answers), "default": default or {"body": OK}},
               timeout=5).raise_for_status()


def seen(router: Child) -> list[dict[str, Any]]:
    return httpx.get(router.url + "/seen", timeout=5).json()


def one_call(kind: str, url: str, transport: str, **options: Any) -> str:
    """One POST through the client ``kind``: the answer's completion text."""
    if kind == "reward":
        with RewardClient(url, transport=transport, **options) as client:
            return client.score(SAMPLE)["choices"][0]["text"]
    if kind == "openai":
        with GenRMClient(url, transport=transport, **options) as client:
            return client.complete("What is 2?").choices[0].text

    async def run() -> str:
        if kind == "reward-async":
            async with AsyncRewardClient(url, transport=transport, **options) as client:
                return (await client.score(SAMPLE))["choices"][0]["text"]
        async with AsyncGenRMClient(url, transport=transport, **options) as client:
            return (await client.complete("What is 2?")).choices[0].text

    return asyncio.run(run())


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", CLIENTS)
def test_a_busy_answer_and_a_dropped_connection_are_retried_within_the_deadline(scripted, kind, transport):
    script(scripted, {"status": 503, "headers": {"retry-after": "0.4"}, "body": {"error": {"message": "busy"}}},
           {"drop": True})
    assert one_call(kind, scripted.url, transport, timeout_s=20, api_key="k") == "fine"
    first, second, third = seen(scripted)
    assert second["at"] - first["at"] >= 0.4, "Retry-After was not honoured"
    budgets = [float(r["headers"]["x-genrm-timeout"]) for r in (first, second, third)]
    assert 20 >= budgets[0] > budgets[1] > budgets[2] > 19, budgets  # what is left of one deadline, told the router
    assert all(r["method"] == "POST" and r["headers"]["content-type"] == "application/json" for r in (first, third))
    assert {r["headers"]["authorization"] for r in (first, second, third)} == {"Bearer k"}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", CLIENTS)
def test_retries_end_with_an_error_naming_the_last_answer(scripted, kind, transport):
    script(scripted, default={"status": 502, "body": {"error": {"message": "no worker"}}})
    with pytest.raises(GenRMError) as err:
        one_call(kind, scripted.url, transport, max_retries=2)
    assert (err.value.status, err.value.attempts, len(seen(scripted))) == (502, 3, 3)
    assert "no worker" in str(err.value) and scripted.url in str(err.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", CLIENTS)
def test_the_deadline_bounds_the_whole_call(scripted, kind, transport):
    """A slow answer is not waited for past ``timeout_s`` (and not retried: no time is left); nor is a
    ``Retry-After`` that reaches past it."""
    script(scripted, {"sleep_s": 5})
    t0 = time.monotonic()
    with pytest.raises(GenRMError, match="deadline") as err:
        one_call(kind, scripted.url, transport, timeout_s=0.8, max_retries=5)
    assert time.monotonic() - t0 < 2.0 and err.value.attempts == 1 and len(seen(scripted)) == 1
    script(scripted, default={"status": 429, "headers": {"retry-after": "5"}})
    t0 = time.monotonic()
    with pytest.raises(GenRMError, match="deadline") as err:
        one_call(kind, scripted.url, transport, timeout_s=0.8, max_retries=5)
    assert time.monotonic() - t0 < 2.0 and err.value.status == 429 and len(seen(scripted)) == 1
