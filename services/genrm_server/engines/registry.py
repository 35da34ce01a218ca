"""The engine registry: the one list of engine names, each with its class, the settings it needs and a description.

Settings validation (the ``engine`` choices and what each engine needs), the CLI's choices and help, and the
Helm chart's schema (checked by a test) all derive from :data:`ENGINES`. Classes are imported on demand, so
torch or vllm load only where the engine that needs them runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from services.genrm_server.engines.base import Engine
    from services.genrm_server.settings import ServerSettings


@dataclass(frozen=True)
class EngineSpec:
    """One engine: where its class lives, what it is, and the settings that must be set to run it."""

    target: str  # "module:Class"
    description: str
    needs: dict[str, str] = field(default_factory=dict)  # settings field -> what it holds

    def load(self) -> type[Engine]:
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)


_MODEL_DIR = "a local model directory"

ENGINES: dict[str, EngineSpec] = {
    "transformers": EngineSpec(
        "services.genrm_server.engines.transformers_engine:TransformersEngine",
        "in-process transformers, CPU or GPU",
        needs={"model": _MODEL_DIR},
    ),
    "openai": EngineSpec(
        "services.genrm_server.engines.openai_engine:OpenAIEngine",
        "an OpenAI-compatible upstream server",
        needs={"upstream_url": "the upstream's base URL"},
    ),
    "vllm": EngineSpec(
        "services.genrm_server.engines.vllm_engine:VLLMEngine",
        "vLLM in-process, GPU",
        needs={"model": _MODEL_DIR},
    ),
    "none": EngineSpec(
        "services.genrm_server.engines.none_engine:NoEngine",
        "no model: a CPU-only sandbox server for code rewards",
    ),
}

# The settings' type of `engine`: a Literal of the registry's names, so validation, its error message and the
# CLI's {choices} come from the list above.
EngineName = Literal[tuple(ENGINES)]


def engines_help() -> str:
    """Each engine with its description, for settings and CLI help."""
    return ", ".join(f"{name} ({spec.description})" for name, spec in ENGINES.items())


def engines_needing(setting: str) -> list[str]:
    """The engines that need ``setting`` (a settings field name) to be set."""
    return [name for name, spec in ENGINES.items() if setting in spec.needs]


def create_engine(settings: ServerSettings) -> Engine:
    return ENGINES[settings.engine].load()(settings)
