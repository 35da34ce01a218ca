"""Dynamic batching for a sequence-classification reward model (the ``disrm`` recipe's scalar).

Concurrent :meth:`ClassifierBatcher.classify` calls queue ``(text, future)`` pairs; one gathering task takes
up to ``max_batch_size`` of them within ``max_wait_ms`` (like the generation scheduler) and runs a single
padded forward on the engine's compute thread. Rows are right-padded, so every text keeps positions
``0..n-1`` and the model pools its last non-pad token: a text scores as it would alone.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from services.genrm_server.engines.base import EngineError, EngineInputError, EngineUnavailable

log = logging.getLogger("genrm.engine.classifier")

_Item = tuple[str, "asyncio.Future[float]"]


class ClassifierBatcher:
    """Batches ``classify`` calls for one ``*ForSequenceClassification`` model (scalar = ``logits[:, 0]``).

    ``tokenizer`` must be an instance used only on ``executor``'s thread (fast tokenizers are not
    thread-safe); ``model.config.pad_token_id`` must be ``pad_id`` so the model finds each row's last token.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        executor: concurrent.futures.Executor,
        *,
        device: Any,
        pad_id: int,
        max_len: int,
        max_batch_size: int,
        max_wait_ms: float,
        model_name: str,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.model, self.tokenizer, self.executor = model, tokenizer, executor
        self.device, self.pad_id, self.max_len = device, pad_id, max_len
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.model_name = model_name
        self.on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.running = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def classify(self, texts: list[str]) -> list[float]:
        """One scalar per text; an unusable text (too long, empty) raises :class:`EngineInputError`."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():  # started on first use, on the serving loop
            self._task = loop.create_task(self._gather(), name="genrm-classify-batcher")
        futures: list[asyncio.Future[float]] = [loop.create_future() for _ in texts]
        self._queue.extend(zip(texts, futures, strict=True))
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for fut in futures:  # caller gone or another text failed: the batcher skips the rest
                fut.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail(list(self._queue), lambda: EngineUnavailable("engine is stopping"))
        self._queue.clear()

    # -- event loop -------------------------------------------------------------------------------

    async def _gather(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # A short gathering window lets a burst (a GRPO group) run as one forward.
            deadline = loop.time() + self.max_wait
            while len(self._queue) < self.max_batch_size and (left := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch: list[_Item] = []
            while self._queue and len(batch) < self.max_batch_size:
                text, fut = self._queue.popleft()
                if not fut.done():  # cancelled: its caller left
                    batch.append((text, fut))
            if not batch:
                continue
            self.running = len(batch)
            try:
                await loop.run_in_executor(self.executor, self._run, batch, loop)
            except asyncio.CancelledError:
                self._fail(batch, lambda: EngineUnavailable("engine is stopping"))
                raise
            except Exception as exc:  # a model error fails this batch, never the server
                log.exception("classifier forward failed")
                self._fail(batch, lambda exc=exc: EngineError(f"reward model forward failed: {exc!r}"))
            finally:
                self.running = 0

    @staticmethod
    def _fail(items: list[_Item], error: Callable[[], Exception]) -> None:
        for _, fut in items:
            if not fut.done():
                fut.set_exception(error())

    # -- compute thread ---------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int] | EngineInputError:
        # A chat template that already wrote the BOS token must not get a second one.
        bos = getattr(self.tokenizer, "bos_token", None)
        ids = self.tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))
        if not ids:
            return EngineInputError("the text to score is empty after tokenization", param="solution")
        if len(ids) > self.max_len:
            return EngineInputError(
                f"This reward model's maximum context length is {self.max_len} tokens. However, the "
                f"question and solution take {len(ids)} tokens; shorten the solution.",
                param="solution",
            )
        return ids

    def _run(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        """Tokenize, pad on the right, one forward; hand every row's result to the loop at once."""
        import torch

        encoded = [self._encode(text) for text, _ in batch]
        rows = [i for i, ids in enumerate(encoded) if isinstance(ids, list)]
        results: list[float | Exception] = [e if isinstance(e, Exception) else 0.0 for e in encoded]
        if rows:
            seqs: list[list[int]] = [encoded[i] for i in rows]  # type: ignore[misc]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            if self.on_batch:
                self.on_batch(len(seqs))
            with torch.inference_mode():
                out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
                scores = out.logits[:, 0].float().tolist()
            for i, score in zip(rows, scores, strict=True):
                results[i] = score

        def deliver() -> None:
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():  # cancelled while it ran
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

        loop.call_soon_threadsafe(deliver)
