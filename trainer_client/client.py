"""Clients for the OpenAI routes through the router (and the reward routes as pydantic models), async and
blocking. Every call follows the one retry and deadline rule (``retry.py``): ``timeout_s`` bounds it, retries
included; every error names the URL, the status and the attempts made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from trainer_client.blocking import Blocking
from trainer_client.protocol import (
    ChatCompletionResponse,
    CompletionResponse,
    ModelList,
    RewardBatchResponse,
    RewardResult,
)
from trainer_client.session import RouterSession

Messages = Sequence[dict[str, Any]]


class AsyncGenRMClient(RouterSession):
    """Asyncio client; ``chat_batch`` runs many conversations with bounded concurrency, in order."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout_s: float = 600.0,
                 max_retries: int = 3, max_connections: int = 256, transport: str = "auto"):
        super().__init__(base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries,
                         max_connections=max_connections, transport=transport)

    async def chat(self, messages: Messages, **params: Any) -> ChatCompletionResponse:
        body = {"messages": list(messages), **params}
        return ChatCompletionResponse.model_validate(await self._call("POST", "/v1/chat/completions", body))

    async def complete(self, prompt: str | list[str], **params: Any) -> CompletionResponse:
        data = await self._call("POST", "/v1/completions", {"prompt": prompt, **params})
        return CompletionResponse.model_validate(data)

    async def models(self) -> ModelList:
        return ModelList.model_validate(await self._call("GET", "/v1/models"))

    async def reward(self, sample: dict[str, Any]) -> RewardResult:
        """Score one sample (``/v1/reward``); see ``RewardRequest`` for the fields."""
        return RewardResult.model_validate(await self._call("POST", "/v1/reward", sample))

    async def reward_batch(self, samples: Sequence[dict[str, Any]]) -> RewardBatchResponse:
        """Score many samples in one request; results in order, item-level errors kept."""
        data = await self._call("POST", "/v1/reward/batch", {"samples": list(samples)})
        return RewardBatchResponse.model_validate(data)

    async def chat_batch(
        self, conversations: Sequence[Messages], *, concurrency: int = 32, **params: Any
    ) -> list[ChatCompletionResponse]:
        gate = asyncio.Semaphore(concurrency)

        async def one(messages: Messages) -> ChatCompletionResponse:
            async with gate:
                return await self.chat(messages, **params)

        return list(await asyncio.gather(*(one(m) for m in conversations)))


class GenRMClient(Blocking[AsyncGenRMClient]):
    """Blocking client: the async client on a private event-loop thread (safe inside a loop)."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout_s: float = 600.0,
                 max_retries: int = 3, max_connections: int = 64, transport: str = "auto"):
        super().__init__(AsyncGenRMClient(base_url, api_key=api_key, timeout_s=timeout_s, max_retries=max_retries,
                                          max_connections=max_connections, transport=transport))

    def chat(self, messages: Messages, **params: Any) -> ChatCompletionResponse:
        return self._run(lambda: self._async.chat(messages, **params))

    def complete(self, prompt: str | list[str], **params: Any) -> CompletionResponse:
        return self._run(lambda: self._async.complete(prompt, **params))

    def models(self) -> ModelList:
        return self._run(self._async.models)
