"""Clients for the OpenAI routes through the router, sync and async (the trainer-client issue adds
the reward API). Retries connect errors, 429, 502, 503 and 504 with back-off, honouring
``Retry-After``; every error names the URL, the status and the attempts made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from trainer_client._transport import RETRY_STATUS, ClientConfig, decode, retry_delay
from trainer_client.errors import GenRMError
from trainer_client.protocol import (
    ChatCompletionResponse,
    CompletionResponse,
    ModelList,
    RewardBatchResponse,
    RewardResult,
)

Messages = Sequence[dict[str, Any]]


class GenRMClient:
    """Blocking client; one pooled keep-alive connection set per instance."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout_s: float = 600.0,
                 max_retries: int = 3, max_connections: int = 64):
        self.config = ClientConfig.resolve(base_url, api_key, timeout_s, max_retries, max_connections)
        self._http = httpx.Client(**self.config.httpx_kwargs())

    def chat(self, messages: Messages, **params: Any) -> ChatCompletionResponse:
        body = {"messages": list(messages), **params}
        return ChatCompletionResponse.model_validate(self._call("POST", "/v1/chat/completions", body))

    def complete(self, prompt: str | list[str], **params: Any) -> CompletionResponse:
        return CompletionResponse.model_validate(self._call("POST", "/v1/completions", {"prompt": prompt, **params}))

    def models(self) -> ModelList:
        return ModelList.model_validate(self._call("GET", "/v1/models"))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            response = None
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                if attempt > self.config.max_retries:
                    raise GenRMError(f"cannot reach the router: {exc!r}", url=self.config.base_url + path,
                                     attempts=attempt) from exc
            if response is not None and (response.status_code not in RETRY_STATUS or attempt > self.config.max_retries):
                return decode(response, attempt)
            time.sleep(retry_delay(attempt, response))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GenRMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGenRMClient:
    """Asyncio client; ``chat_batch`` runs many conversations with bounded concurrency, in order."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout_s: float = 600.0,
                 max_retries: int = 3, max_connections: int = 256):
        self.config = ClientConfig.resolve(base_url, api_key, timeout_s, max_retries, max_connections)
        self._http = httpx.AsyncClient(**self.config.httpx_kwargs())

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

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            response = None
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                if attempt > self.config.max_retries:
                    raise GenRMError(f"cannot reach the router: {exc!r}", url=self.config.base_url + path,
                                     attempts=attempt) from exc
            if response is not None and (response.status_code not in RETRY_STATUS or attempt > self.config.max_retries):
                return decode(response, attempt)
            await asyncio.sleep(retry_delay(attempt, response))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGenRMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
