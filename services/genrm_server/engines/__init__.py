"""Engines: how text is generated. One module each, one interface (:class:`Engine`), a registry."""

from __future__ import annotations

import importlib

from services.genrm_server.engines.base import (
    Delta,
    Engine,
    EngineError,
    EngineInputError,
    EngineUnavailable,
    GenerationInput,
    SamplingParams,
)
from services.genrm_server.settings import ServerSettings

# name -> "module:Class"; imported on demand so torch/vllm load only for the engine in use.
ENGINES = {
    "transformers": "services.genrm_server.engines.transformers_engine:TransformersEngine",
    "openai": "services.genrm_server.engines.openai_engine:OpenAIEngine",
    "vllm": "services.genrm_server.engines.vllm_engine:VLLMEngine",
}


def create_engine(settings: ServerSettings) -> Engine:
    module, cls = ENGINES[settings.engine].split(":")
    return getattr(importlib.import_module(module), cls)(settings)


__all__ = [
    "ENGINES",
    "Delta",
    "Engine",
    "EngineError",
    "EngineInputError",
    "EngineUnavailable",
    "GenerationInput",
    "SamplingParams",
    "create_engine",
]
