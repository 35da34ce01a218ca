"""The import graph between the top-level packages: no cycle and no upward arrow.

Layers, bottom first: ``trainer_client`` (what a trainer installs: httpx + pydantic), ``common`` (settings I/O,
keys, hashing), ``router``, ``services`` (the server, the CLI, Ray Serve). A package may import only from the
layers below it; ``bench`` and ``tests`` sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["trainer_client", "common", "router", "services"]


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level project packages each module of ``package`` imports (at module level or inside functions)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & set(LAYERS)
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_from_the_layers_below(package: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    upward = {module: sorted(names - allowed) for module, names in _imports(package).items() if names - allowed}
    assert not upward, f"{package} imports from a layer above it: {upward}"


def test_the_check_sees_imports() -> None:
    """The scan finds the arrows that exist (else the test above would pass on nothing)."""
    assert "common" in _imports("router")["router/settings.py"]
    assert {"router", "common", "trainer_client"} <= _imports("services")["services/ray_serve.py"]
