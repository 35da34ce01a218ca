"""Router settings (flags, ``GENRM_ROUTER_*`` env, ``router:`` section of the YAML file)."""

from __future__ import annotations

import json
from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from router.policies import POLICIES
from services.settings_io import ComponentSettings


class RouterSettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="GENRM_ROUTER_", extra="forbid")
    yaml_section: ClassVar[str] = "router"

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(9000, ge=0, le=65535, description="Port to bind.")
    # NoDecode: the env value is parsed by ``_split`` (JSON list or comma-separated), not as JSON only.
    workers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Worker base URLs, e.g. http://127.0.0.1:8001 (env: a JSON list or comma-separated).",
    )
    policy: str = Field("least_outstanding", description=f"Worker selection policy: {', '.join(POLICIES)}.")
    max_attempts: int = Field(3, ge=1, le=10, description="Tries per request, each on a different worker.")
    connect_timeout_s: float = Field(2.0, gt=0, description="Connecting to a worker; past it, try another.")
    request_timeout_s: float = Field(
        900.0, gt=0, description="Longest silence from a worker (before its headers or between body chunks): 504."
    )
    health_interval_s: float = Field(2.0, gt=0, description="Seconds between active /ready probes.")
    health_timeout_s: float = Field(2.0, gt=0, description="Timeout of one readiness probe.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Bodies larger than this get 413.")
    log_level: str = Field("info", description="Log verbosity (debug, info, warning, error).")

    @field_validator("workers", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return json.loads(v) if v.lstrip().startswith("[") else [w.strip() for w in v.split(",") if w.strip()]
        return v

    @field_validator("workers")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"worker URL must start with http:// or https://: {url!r}")
        return [u.rstrip("/") for u in v]

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"unknown policy {v!r}; choose one of {', '.join(POLICIES)}")
        return v
