"""trainer_client/client.py: the async OpenAI-routes client batches through a real stack; a client needs a URL."""

from __future__ import annotations

import pytest

from trainer_client import AsyncGenRMClient, GenRMClient

CHAT = [{"role": "user", "content": "Is 2 + 2 = 4? Answer in \\boxed{}."}]


async def test_async_client_batch(stack):
    async with AsyncGenRMClient(stack.url) as client:
        results = await client.chat_batch([CHAT] * 6, concurrency=3, max_tokens=3, ignore_eos=True)
    assert len(results) == 6 and all(r.usage.completion_tokens == 3 for r in results)


def test_client_requires_a_url(monkeypatch):
    monkeypatch.delenv("GENRM_URL", raising=False)
    with pytest.raises(ValueError, match="GENRM_URL"):
        GenRMClient()
