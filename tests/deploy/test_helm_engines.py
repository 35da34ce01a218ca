"""The Helm chart's engines are the registry's: the schema's ``server.engine`` enum is its list of names (but
``none``, which only the ``sandbox`` Deployment runs), and the schema's per-engine requirements (a model, an
upstream URL) are what each registered engine needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.genrm_server.engines.registry import ENGINES, engines_needing

SCHEMA = Path(__file__).resolve().parents[2] / "helm" / "genrm-platform" / "values.schema.json"


def _server_schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())["properties"]["server"]


def _engines_of(condition: dict[str, Any]) -> set[str]:
    """The engines an ``if`` clause on ``engine`` (a const or an enum) applies to."""
    engine = condition["properties"]["engine"]
    return {engine["const"]} if "const" in engine else set(engine["enum"])


def _needs_in_schema() -> dict[str, set[str]]:
    """Settings field -> the engines the schema requires it for, read from the server's allOf clauses."""
    needs: dict[str, set[str]] = {"model": set(), "upstream_url": set()}
    for clause in _server_schema()["allOf"]:
        if "engine" not in clause["if"].get("properties", {}):
            continue
        engines, then = _engines_of(clause["if"]), clause["then"]
        if "upstreamUrl" in then.get("required", []):
            needs["upstream_url"] |= engines
        source = then.get("properties", {}).get("model", {}).get("properties", {}).get("source", {})
        if source.get("not") == {"const": "none"}:  # a model volume: pvc, hostPath or tiny
            needs["model"] |= engines
    return needs


def test_schema_engine_enum_is_the_registry() -> None:
    """Every registered engine but `none`: a model-less server is the chart's `sandbox` Deployment (its own
    securityContext and headless Service), never a `server` replica."""
    assert "none" in ENGINES and not ENGINES["none"].needs
    assert _server_schema()["properties"]["engine"]["enum"] == [name for name in ENGINES if name != "none"]


def test_schema_requires_what_each_engine_needs() -> None:
    in_schema = _needs_in_schema()
    assert {need for spec in ENGINES.values() for need in spec.needs} <= set(in_schema), "a need the chart can't set"
    for need, engines in in_schema.items():
        assert engines == set(engines_needing(need)), need
