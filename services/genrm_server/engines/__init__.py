"""Engines: how text is generated. One module each, one interface (:class:`Engine`), a registry (``registry.py``)."""

from __future__ import annotations

from services.genrm_server.engines.base import (
    Delta,
    Engine,
    EngineError,
    EngineInputError,
    EngineUnavailable,
    GenerationInput,
    SamplingParams,
)
from services.genrm_server.engines.registry import ENGINES, EngineSpec, create_engine

__all__ = [
    "ENGINES",
    "Delta",
    "Engine",
    "EngineError",
    "EngineInputError",
    "EngineSpec",
    "EngineUnavailable",
    "GenerationInput",
    "SamplingParams",
    "create_engine",
]
