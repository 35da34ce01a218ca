"""TRL integration: :class:`RemoteReward`, a GRPO reward function scored by the GenRM router.

    from trainer_client.adapters.trl import RemoteReward
    trainer = GRPOTrainer(model=..., reward_funcs=[RemoteReward("http://router:9000", recipe="math")], ...)

``__call__`` is a coroutine on purpose: TRL >= 1.14 detects async callable instances (``is_async_callable``
looks at ``__call__``) and awaits them on its own event-loop thread, together with any other async reward
functions, so the trainer never blocks a loop of ours. Older TRL only checks ``inspect.iscoroutinefunction``
on the instance, would get a coroutine back instead of rewards, and is not supported.

This module imports neither TRL nor torch: TRL only calls it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from trainer_client.reward_client import AsyncRewardClient, FailurePolicy

Message = dict[str, Any]


class RemoteReward:
    """A TRL reward function (``reward_funcs=[RemoteReward(...)]``) that scores completions remotely.

    Each completion becomes one reward sample: the question is the prompt's last user message (or the
    ``question_column`` dataset column), the solution is the completion's assistant text, the ground truth
    is the ``ground_truth_column`` column. Completions of one prompt share a ``group_id`` so the router
    sends a whole GRPO group to one replica. With ``on_failure="none"`` (the default) a sample that cannot
    be scored gets ``None``, which TRL leaves out of the advantage and the logged means, rather than a
    made-up 0 that would bias training.
    """

    def __init__(self, base_url: str | None = None, *, recipe: str = "math", ground_truth_column: str = "answer",
                 question_column: str | None = None, api_key: str | None = None,
                 on_failure: FailurePolicy = "none", timeout_s: float = 600.0, concurrency: int = 64,
                 name: str | None = None):
        self.base_url, self.api_key = base_url, api_key
        self.recipe, self.ground_truth_column, self.question_column = recipe, ground_truth_column, question_column
        self.on_failure, self.timeout_s, self.concurrency = on_failure, timeout_s, concurrency
        # TRL names the logged metrics (``rewards/<__name__>/mean``) after this; an instance has none by default.
        self.__name__ = name or f"genrm_{recipe}"
        self._client: AsyncRewardClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client_for_loop(self) -> AsyncRewardClient:
        """The client, created once and reused; again only if called from another event loop (its
        connection pool belongs to the loop that opened it; TRL's loop lives as long as the trainer)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = AsyncRewardClient(
                self.base_url, api_key=self.api_key, recipe=self.recipe, timeout_s=self.timeout_s,
                concurrency=self.concurrency, on_failure=self.on_failure, progress=False,
            )
            self._loop = loop
        return self._client

    async def __call__(self, prompts: Sequence[str | list[Message]], completions: Sequence[str | list[Message]],
                       completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any) -> list[float | None]:
        """One reward per (prompt, completion) pair, in order; ``kwargs`` holds the dataset's other columns."""
        if self.ground_truth_column not in kwargs:
            columns = sorted(k for k, v in kwargs.items() if isinstance(v, list))
            raise KeyError(f"{self.__name__}: no ground-truth column {self.ground_truth_column!r} in the batch "
                           f"(columns: {columns}); pass ground_truth_column=...")
        truths = kwargs[self.ground_truth_column]
        questions = kwargs[self.question_column] if self.question_column else [last_user_text(p) for p in prompts]
        samples = [
            {"recipe": self.recipe, "question": question, "solution": assistant_text(completion),
             "ground_truth": truth, "group_id": group_id(prompt)}
            for prompt, completion, question, truth in zip(prompts, completions, questions, truths, strict=True)
        ]
        results = await self._client_for_loop().score_batch(samples)
        return [None if r is None else float(r["score"]) for r in results]

    async def aclose(self) -> None:
        """Close the HTTP connections (call on the loop that scored; TRL's loop just ends with the process)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = self._loop = None


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a multimodal content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def last_user_text(prompt: str | list[Message]) -> str:
    """The question a judge should see: a plain prompt as is, else the last user message's text."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"] or list(prompt)  # no user turn: the last message
    return _text(users[-1].get("content")) if users else ""


def assistant_text(completion: str | list[Message]) -> str:
    """A completion's text: a plain string as is, else its assistant messages' text (joined if several)."""
    if isinstance(completion, str):
        return completion
    return "\n".join(_text(m.get("content")) for m in completion if m.get("role", "assistant") == "assistant")


def group_id(prompt: str | list[Message]) -> str:
    """A stable id per prompt (the same in every process, unlike ``hash()``): one GRPO group per prompt."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)
    return "trl-" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
