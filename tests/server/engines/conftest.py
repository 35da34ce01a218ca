"""The transformers engine on the tiny model, loaded once a session without its scheduler (tests that only run its
model code share it)."""

from __future__ import annotations

import pytest

from services.genrm_server.engines.transformers_engine import TransformersEngine
from services.genrm_server.settings import ServerSettings


@pytest.fixture(scope="session")
def engine(tiny_model):
    eng = TransformersEngine(ServerSettings(model=str(tiny_model), device="cpu"))
    eng._load()  # the real loading code, without starting the scheduler
    return eng
