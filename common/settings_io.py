"""Settings from flags, environment and a YAML file, validated by pydantic-settings.

Precedence, highest first: command-line flag, ``GENRM_<COMPONENT>_<NAME>`` environment variable,
the component's section of the YAML file (``--config``), the default. Each component's settings
class is the single source of truth: its fields become the CLI flags (``--max-batch-size``) and their
descriptions the ``--help`` text, so flags, env and YAML can never drift apart.
"""

from __future__ import annotations

import argparse
import contextvars
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

# The YAML section of the settings being loaded (a context variable: pydantic-settings asks for its sources
# inside the model's constructor, after ``load`` has read the file).
_yaml_section: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("genrm_yaml", default=None)
# The sections of a settings file, one per component; any other top-level key is a typo. Fixed here rather
# than collected from the loaded classes: a router process never imports the server's settings.
SECTIONS = frozenset({"server", "router"})

S = TypeVar("S", bound="ComponentSettings")


class SettingsError(ValueError):
    """Invalid configuration; the message names every bad setting and where it can be set."""


class ComponentSettings(BaseSettings):
    """Base for a component's settings; subclasses set ``env_prefix`` and ``yaml_section``."""

    yaml_section: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.yaml_section and cls.yaml_section not in SECTIONS:
            raise TypeError(f"{cls.__name__}: yaml_section {cls.yaml_section!r} is not one of {sorted(SECTIONS)}")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        section = _yaml_section.get()
        if section:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=section))
        return tuple(sources)

    @classmethod
    def load(cls: type[S], config_file: str | Path | None = None, **overrides: Any) -> S:
        """Validate settings from all sources; raise :class:`SettingsError` naming bad fields."""
        section = read_section(Path(config_file), cls.yaml_section) if config_file else None
        token = _yaml_section.set(section)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(_describe(cls, exc)) from None
        finally:
            _yaml_section.reset(token)


def read_section(path: Path, name: str) -> dict[str, Any]:
    """The ``name:`` section of a YAML settings file; a file without it means defaults."""
    if not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SettingsError(f"config file {path}: YAML syntax error{where}: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path}: not readable as YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: the top level must be a mapping of sections "
                            f"({', '.join(sorted(SECTIONS))}), got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in SECTIONS)
    if unknown:
        raise SettingsError(f"config file {path}: unknown section(s) {', '.join(unknown)}; "
                            f"sections are {', '.join(sorted(SECTIONS))}")
    section = data.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise SettingsError(f"config file {path}: section '{name}' must be a mapping of settings, "
                            f"got {type(section).__name__}")
    return section


def _describe(cls: type[ComponentSettings], exc: ValidationError) -> str:
    prefix = cls.model_config.get("env_prefix", "")
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a cross-field rule of the model
            lines.append(f"invalid settings: {err['msg'].removeprefix('Value error, ')}")
            continue
        name = str(err["loc"][0])
        where = f"--{name.replace('_', '-')}, {prefix}{name.upper()}"
        if cls.yaml_section:
            where += f", {cls.yaml_section}.{name} in --config"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, list(cls.model_fields), n=1)
            source = f"{cls.yaml_section}: section of the config file, or a {prefix}* variable"
            guess = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"unknown setting '{name}' (in the {source}){guess}")
        else:
            lines.append(f"invalid setting '{name}' ({where}): {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


# ---------------------------------------------------------------------------------------------
# argparse generation


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[ComponentSettings]) -> None:
    """Add one ``--flag`` per settings field; unset flags stay absent so env/YAML still apply."""
    group = parser.add_argument_group(
        f"settings (flags override {cls.model_config.get('env_prefix', '')}* env vars and the YAML file)"
    )
    prefix = cls.model_config.get("env_prefix", "")
    for name, field in cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        shown = f"default: {_shown(default)}; " if default not in (None, "", []) else ""
        help_text = f"{field.description or ''} [{shown}env: {prefix}{name.upper()}]".replace("%", "%%")
        base = _base_type(field.annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = _metavar(base, field.annotation)
            if typing.get_origin(field.annotation) is list or base is list:
                kwargs["nargs"] = "+"
        group.add_argument(flag, **kwargs)


def _shown(default: Any) -> str:
    return ",".join(map(str, default)) if isinstance(default, list) else str(default)


def overrides_from_args(args: argparse.Namespace, cls: type[ComponentSettings]) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in cls.model_fields}


def _base_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is typing.Literal:
        return str
    return origin or annotation


def _metavar(base: Any, annotation: Any) -> str:
    choices = _choices(annotation)
    if choices:
        return "{" + ",".join(choices) + "}"
    return {int: "INT", float: "FLOAT", Path: "PATH"}.get(base, "VALUE")


def _choices(annotation: Any) -> list[str]:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(annotation):
            if c := _choices(a):
                return c
    return []


LIST_NOTE = "(env: a JSON list or comma-separated)"


def split_list(v: object) -> object:
    """A list setting from a flag, env or YAML: a JSON list, or comma-separated values (``--workers A,B``)."""
    if isinstance(v, str):
        v = json.loads(v) if v.lstrip().startswith("[") else [v]
    if isinstance(v, list):  # each flag value may itself be comma-separated: --workers A,B
        return [w.strip() for item in v for w in str(item).split(",") if w.strip()]
    return v
