"""The blocking OpenAI-routes client through router -> 2 servers: each route, over both transports, and
from inside a running event loop (it runs the async client on a loop thread of its own)."""

from __future__ import annotations

import asyncio

import pytest

from trainer_client import GenRMClient

CHAT = [{"role": "user", "content": "Is 2 + 2 = 4? Answer in \\boxed{}."}]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_blocking_client_routes(stack, transport):
    with GenRMClient(stack.url + "/v1", transport=transport) as client:  # a base URL with /v1 works too
        chat = client.chat(CHAT, max_tokens=4, ignore_eos=True)
        assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 4
        done = client.complete(["The answer is", "Step 1:"], max_tokens=3, ignore_eos=True)
        assert [c.index for c in done.choices] == [0, 1] and done.usage.completion_tokens == 6
        assert client.models().data[0].id == "tiny"


def test_blocking_client_inside_a_running_event_loop(stack):
    async def inside() -> int:
        with GenRMClient(stack.url) as client:
            return client.complete("Step 1:", max_tokens=2, ignore_eos=True).usage.completion_tokens

    assert asyncio.run(inside()) == 2
