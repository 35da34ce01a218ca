"""The one small interface every engine implements: turn a prompt into a stream of text deltas.

The server owns HTTP, OpenAI shapes, ``n`` and metrics; an engine owns tokenization, scheduling and
generation of *one* sequence per :meth:`Engine.generate` call (``n`` choices are ``n`` calls, which a
batching engine serves together).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


class EngineError(Exception):
    """An error the client should see with ``status`` and a message naming ``param``."""

    status = 500

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class EngineInputError(EngineError):
    """The request cannot be served as asked (context too long, no chat template, ...)."""

    status = 400


class EngineUnavailable(EngineError):
    """The engine cannot serve right now (upstream down, not loaded); retrying elsewhere may work."""

    status = 503


@dataclass
class SamplingParams:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # 0 or -1: off
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0


@dataclass
class GenerationInput:
    """Either chat ``messages`` (the engine applies the chat template) or a raw ``prompt``."""

    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    add_generation_prompt: bool = True
    # False: the caller only wants the final text (one Delta at the end), which spares an engine the
    # per-token detokenization and hand-off that streaming needs.
    incremental: bool = True


@dataclass
class Delta:
    """A piece of one sequence's output; the last one has ``finish_reason`` and token counts."""

    text: str
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


BatchObserver = Callable[[int], None]


class Engine(abc.ABC):
    """Generates text for one model. Subclasses live one per module in this package."""

    model_name: str
    model_root: str | None = None
    max_model_len: int | None = None
    serves_model: bool = True  # False only for --engine none (a sandbox server): /v1/models lists nothing

    def __init__(self) -> None:
        self.on_batch: BatchObserver | None = None  # set by the server to feed the batch-size metric
        self.on_abort: Callable[[], None] | None = None  # a sequence dropped because its client left

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model / connect; return when ready to serve."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release resources; pending generations end with ``finish_reason='abort'``."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool: ...

    async def check_ready(self) -> bool:
        """Readiness for ``/ready``; an engine with an upstream re-checks it here."""
        return self.ready

    @property
    def num_running(self) -> int:
        return 0

    def extra_metrics(self) -> bytes:
        """Prometheus text the engine exposes itself (vLLM's ``vllm:*`` families), appended to ``/metrics``."""
        return b""

    @property
    def num_waiting(self) -> int:
        return 0

    @abc.abstractmethod
    def generate(self, inp: GenerationInput, params: SamplingParams) -> AsyncIterator[Delta]:
        """Stream one sequence. Validation errors raise :class:`EngineInputError` before the first delta.

        Closing the iterator early (client gone) must free the sequence's slot in the engine.
        """

    async def classify(self, texts: list[str]) -> list[float]:
        """One scalar per text from a sequence-classification reward model (the ``disrm`` recipe).

        Optional: engines serving a generative model keep this default, which rejects the request.
        """
        raise EngineInputError(
            f"model '{self.model_name}' is not a sequence-classification reward model", param="recipe"
        )
