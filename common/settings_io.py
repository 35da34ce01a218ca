"""Settings from flags, environment and a YAML file, validated by pydantic-settings.

Precedence, highest first: command-line flag, ``GENRM_<COMPONENT>_<NAME>`` environment variable,
the component's section of the YAML file (``--config``), the default. Each component's settings
class is the single source of truth: its fields become the CLI flags (``--max-batch-size``) and their
descriptions the ``--help`` text, so flags, env and YAML can never drift apart.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, YamlConfigSettingsSource

_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("genrm_yaml_file", default=None)

S = TypeVar("S", bound="ComponentSettings")


class SettingsError(ValueError):
    """Invalid configuration; the message names every bad setting and where it can be set."""


class ComponentSettings(BaseSettings):
    """Base for a component's settings; subclasses set ``env_prefix`` and ``yaml_section``."""

    yaml_section: ClassVar[str] = ""

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
        path = _yaml_file.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path, yaml_config_section=cls.yaml_section))
        return tuple(sources)

    @classmethod
    def load(cls: type[S], config_file: str | Path | None = None, **overrides: Any) -> S:
        """Validate settings from all sources; raise :class:`SettingsError` naming bad fields."""
        path = Path(config_file) if config_file else None
        if path is not None and not path.is_file():
            raise SettingsError(f"config file not found: {path}")
        token = _yaml_file.set(path)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(_describe(cls, exc)) from None
        except (KeyError, TypeError, ValueError) as exc:  # e.g. a YAML file without the section
            raise SettingsError(f"config file {path}: {exc}") from None
        finally:
            _yaml_file.reset(token)


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
            lines.append(f"unknown setting '{name}'")
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
    for name, field in cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or "") + (f" [default: {default}]" if default not in (None, "") else "")
        base = _base_type(field.annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = _metavar(base, field.annotation)
            if typing.get_origin(field.annotation) is list or base is list:
                kwargs["nargs"] = "+"
        group.add_argument(flag, **kwargs)


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
