"""``--engine none``: no model at all, for a CPU-only sandbox server (the ``code`` recipe and ``/run_code``).

It is ready at once, lists no model, and answers every generation with a 404 that says what this server is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from services.genrm_server.engines.base import Delta, Engine, EngineError, GenerationInput, SamplingParams

if TYPE_CHECKING:
    from services.genrm_server.settings import ServerSettings


class NoModel(EngineError):
    status = 404


class NoEngine(Engine):
    model_name = ""
    serves_model = False

    def __init__(self, settings: ServerSettings | None = None):
        super().__init__()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @property
    def ready(self) -> bool:
        return True

    async def generate(self, inp: GenerationInput, params: SamplingParams) -> AsyncIterator[Delta]:
        raise NoModel("this server has no model (--engine none): it runs code rewards (recipe code, /run_code); "
                      "send model requests to a judge server", param="model")
        yield  # an async generator, as the interface says

    async def classify(self, texts: list[str]) -> list[float]:
        raise NoModel("this server has no model (--engine none)", param="model")
