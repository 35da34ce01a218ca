"""The tiny model's marker: ``genrm tiny-model`` writes it beside the weights, the server reads it to warn that
judgments are meaningless (without importing the tiny-model tool), and any other model directory has none."""

from __future__ import annotations

from pathlib import Path

from services.genrm_server.model_marker import MARKER, marker_warning
from services.local_stack import Child
from services.tiny_model import WARNING, is_tiny_model


def test_the_tiny_model_carries_its_warning(tiny_model: Path) -> None:
    assert is_tiny_model(tiny_model)
    assert marker_warning(tiny_model) == WARNING


def test_other_models_carry_none(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    for model in (tmp_path, tmp_path / "missing", "http://127.0.0.1:8000/v1", None):
        assert not is_tiny_model(model) and marker_warning(model) is None


def test_an_unreadable_marker_still_warns(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text("not json")
    assert MARKER in (marker_warning(tmp_path) or "")


def test_the_server_logs_the_warning_of_the_model_it_loads(server: Child) -> None:
    assert server.log_path is not None
    assert WARNING in server.log_path.read_text()
