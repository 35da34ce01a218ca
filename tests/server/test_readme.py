"""The README says what is true: every `genrm` flag it names exists, its examples use the ports the commands
default to, and its stated defaults are the code's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.settings import RouterSettings
from services.cli import build_parser
from services.genrm_server.settings import ServerSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _flags(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {option for action in sub._actions for option in action.option_strings}


@pytest.mark.parametrize("command", ["serve", "route", "up", "score", "demo"])
def test_every_flag_the_readme_gives_a_command_exists(command: str) -> None:
    known = _flags(command)
    used = set()
    for line in README.splitlines():
        for match in re.finditer(rf"genrm {command}\b([^`#\n]*)", line):
            used |= set(re.findall(r"(--[a-z][a-z0-9-]+)", match.group(1)))
    if command in ("serve", "route", "up"):
        assert used, f"the README shows no `genrm {command}` with a flag"
    assert used <= known, f"`genrm {command}` flags in the README that do not exist: {sorted(used - known)}"


def test_the_examples_port_is_genrm_ups_default() -> None:
    assert RouterSettings.model_fields["port"].default == 9000  # genrm up's router port unless configured
    assert "router ready: http://127.0.0.1:9000" in README
    assert "curl -s http://127.0.0.1:9000/v1/reward" in README


def test_the_stated_defaults_are_the_codes() -> None:
    assert ServerSettings.model_fields["fapo_flaw_penalty"].default == 1.0
    assert "i.e. 0 with the default penalty of 1.0" in README
    assert 'extra_info["question"]' in README
