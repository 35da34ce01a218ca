"""In-process vLLM engine (``AsyncLLM``, the V1 engine) for GPU production.

vllm is imported only when this engine starts, so nothing else in the platform needs it installed.
Continuous batching, prefix caching and CUDA graphs are vLLM's; this module only maps our
interface onto ``AsyncLLM.generate`` in DELTA mode and aborts requests whose client is gone.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from services.genrm_server.engines.base import (
    Delta,
    Engine,
    EngineInputError,
    EngineUnavailable,
    GenerationInput,
    SamplingParams,
)
from services.genrm_server.settings import ServerSettings

log = logging.getLogger("genrm.engine.vllm")


class VLLMEngine(Engine):
    def __init__(self, settings: ServerSettings):
        super().__init__()
        from pathlib import Path

        self.settings = settings
        self.model_root = settings.model
        self.model_name = settings.served_model_name or Path(str(settings.model)).resolve().name
        self._llm: Any = None
        self._in_flight = 0

    async def start(self) -> None:
        try:
            from transformers import AutoTokenizer
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError(
                "engine 'vllm' needs vllm installed (pip install 'genrm-platform[vllm]') and a GPU"
            ) from exc
        s = self.settings
        args = AsyncEngineArgs(
            model=s.model,
            served_model_name=[self.model_name],
            dtype=s.dtype,
            max_model_len=s.max_model_len,
            gpu_memory_utilization=s.gpu_memory_utilization,
            enable_prefix_caching=s.enable_prefix_caching,
            # vLLM's own default (256) unless the user set a cap: ours (32) suits the CPU engine, not vLLM.
            **({"max_num_seqs": s.max_batch_size} if "max_batch_size" in s.model_fields_set else {}),
        )
        self._llm = AsyncLLM.from_engine_args(args)
        self.tokenizer = AutoTokenizer.from_pretrained(s.model, local_files_only=True)
        self.max_model_len = self._llm.model_config.max_model_len

    def extra_metrics(self) -> bytes:
        """vLLM's own metrics (prefix-cache hits, KV usage, ...) from the process-wide registry its stat logger
        fills; the two load gauges are left out because the server's registry already exports them."""
        if self._llm is None:
            return b""
        from prometheus_client import REGISTRY, generate_latest

        return generate_latest(_VLLMFamilies(REGISTRY))

    async def stop(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    @property
    def ready(self) -> bool:
        return self._llm is not None and not getattr(self._llm, "errored", False)

    @property
    def num_running(self) -> int:
        running = scheduler_gauge("vllm:num_requests_running") if self._llm is not None else None
        return self._in_flight if running is None else running

    @property
    def num_waiting(self) -> int:
        """Requests vLLM's scheduler holds back (no batch slot or KV blocks yet): the load the judges scale on."""
        return (scheduler_gauge("vllm:num_requests_waiting") if self._llm is not None else None) or 0

    async def generate(self, inp: GenerationInput, params: SamplingParams) -> AsyncIterator[Delta]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        if not self.ready:
            raise EngineUnavailable("vLLM engine is not running")
        if inp.messages is not None:
            prompt = self.tokenizer.apply_chat_template(
                inp.messages, tokenize=False, add_generation_prompt=inp.add_generation_prompt
            )
        else:
            prompt = inp.prompt or ""
        kwargs: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "stop": params.stop or None,
            "seed": params.seed,
            "ignore_eos": params.ignore_eos,
            "min_tokens": params.min_tokens,
            "output_kind": RequestOutputKind.DELTA,
        }
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.top_k is not None:
            kwargs["top_k"] = params.top_k if params.top_k > 0 else -1
        request_id = secrets.token_hex(8)
        generated = 0
        self._in_flight += 1
        try:
            stream = self._llm.generate(prompt, VSamplingParams(**kwargs), request_id)
            async for out in stream:
                piece = out.outputs[0]
                generated += len(piece.token_ids)
                if out.finished:
                    yield Delta(
                        piece.text,
                        finish_reason=piece.finish_reason,
                        stop_reason=piece.stop_reason,
                        prompt_tokens=len(out.prompt_token_ids or []),
                        completion_tokens=generated,
                    )
                    return
                if piece.text:
                    yield Delta(piece.text)
        except ValueError as exc:  # vLLM's input validation (context length, ...)
            raise EngineInputError(str(exc), param="messages" if inp.messages else "prompt") from exc
        finally:
            self._in_flight -= 1
            if self._llm is not None:
                await self._llm.abort(request_id)  # no-op when finished; frees the slot otherwise


def scheduler_gauge(name: str, registry: Any = None) -> int | None:
    """A vLLM scheduler gauge (``vllm:num_requests_running`` / ``_waiting``) summed over its engines, from the
    registry vLLM's stat logger fills; None until vLLM has recorded one. Read on every answer (its load report):
    only that family's collector is collected, not the whole registry."""
    if registry is None:
        from prometheus_client import REGISTRY as registry
    for family in registry.restricted_registry([name]).collect():
        if family.name == name:
            return int(sum(sample.value for sample in family.samples))
    return None


class _VLLMFamilies:
    """A registry view for ``generate_latest``: only vLLM's families, minus those the server exports itself."""

    OWN = frozenset({"vllm:num_requests_running", "vllm:num_requests_waiting"})

    def __init__(self, registry: Any):
        self.registry = registry

    def collect(self) -> Any:
        return (f for f in self.registry.collect() if f.name.startswith("vllm:") and f.name not in self.OWN)
