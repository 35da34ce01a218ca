"""The engine registry is the one list of engine names: each entry loads its engine class, the settings and the CLI
offer exactly its names, and what an engine needs is a setting the server refuses to start without."""

from __future__ import annotations

import typing

import pytest

from common.settings_io import SettingsError
from services.cli import build_parser
from services.genrm_server.engines import Engine
from services.genrm_server.engines.registry import ENGINES
from services.genrm_server.settings import ServerSettings


@pytest.mark.parametrize("name", list(ENGINES))
def test_each_engine_loads_its_class(name: str) -> None:
    cls = ENGINES[name].load()
    assert issubclass(cls, Engine) and not getattr(cls, "__abstractmethods__", None)


@pytest.mark.parametrize("command", ["serve", "up"])
def test_settings_and_cli_offer_the_registry_names(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert typing.get_args(ServerSettings.model_fields["engine"].annotation) == tuple(ENGINES)
    assert ServerSettings.model_fields["engine"].default in ENGINES
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert f"--engine {{{','.join(ENGINES)}}}" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(ENGINES))
def test_an_engine_without_what_it_needs_is_a_settings_error(name: str) -> None:
    needs = ENGINES[name].needs
    assert set(needs) <= set(ServerSettings.model_fields)
    given = {need: "http://127.0.0.1:1/v1" if need == "upstream_url" else "/m" for need in needs}
    assert ServerSettings.load(engine=name, **given).engine == name
    for need in needs:
        with pytest.raises(SettingsError, match=f"engine '{name}' needs `{need}`"):
            ServerSettings.load(engine=name, **{k: v for k, v in given.items() if k != need})
