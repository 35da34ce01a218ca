"""Router settings (flags, ``GENRM_ROUTER_*`` env, ``router:`` section of the YAML file).

Each policy's own knobs (its ``Config``) are added here as ``<settings_prefix><field>`` with the policy's default,
bounds and description, so a new policy setting is a flag, an env var and a YAML key without a line here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, create_model, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.api_keys import key_id
from common.settings_io import LIST_NOTE, ComponentSettings, split_list
from router.fair_queue import ANONYMOUS
from router.policies import POLICIES

_LIST = LIST_NOTE


class _RouterSettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="GENRM_ROUTER_", extra="forbid")
    yaml_section: ClassVar[str] = "router"

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(9000, ge=0, le=65535, description="Port to bind.")
    # NoDecode: list values are parsed by ``_split_list`` (JSON list or comma-separated), not as JSON only.
    workers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description=f"Static worker base URLs, e.g. http://127.0.0.1:8001 {_LIST}."
    )
    discovery_dns: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Discover workers from DNS names' A records, e.g. "
        "dns://genrm-server.ns.svc:8000 (a Kubernetes headless service; dns+https:// for TLS workers); several "
        f"names (judges and sandbox servers, each on its own port) are followed each on its own {_LIST}."
    )
    discovery_interval_s: float = Field(5.0, gt=0, description="Seconds between DNS resolutions.")
    discovery_nameservers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description=f"DNS servers to ask (IP or IP:PORT); empty = the system's {_LIST}."
    )
    policy: str = Field("least_outstanding", description=f"Policy of OpenAI and other routes: {', '.join(POLICIES)}.")
    reward_policy: str = Field(
        "affinity", description="Policy of the reward routes (/v1/reward*, /get_reward, /slime/reward)."
    )
    affinity_prefix_chars: int = Field(
        256, ge=1, description="Without a group id or X-Affinity-Key, the key is this many leading prompt characters."
    )
    max_attempts: int = Field(3, ge=1, le=10, description="Tries per request, each on a different worker.")
    retry_backoff_s: float = Field(0.02, ge=0, description="Base of the exponential back-off (full jitter).")
    retry_backoff_max_s: float = Field(1.0, ge=0, description="Cap of one back-off.")
    connect_timeout_s: float = Field(2.0, gt=0, description="Connecting to a worker; past it, try another.")
    request_timeout_s: float = Field(
        900.0, gt=0, description="Longest silence from a worker (before its headers or between body chunks)."
    )
    request_deadline_s: float = Field(
        0.0, ge=0, description="Overall deadline of one request, retries included (0 = none); a client may ask "
        "for less with the X-GenRM-Timeout header (seconds)."
    )
    max_in_flight_per_worker: int = Field(0, ge=0, description="Requests in flight per worker (0 = no cap).")
    queue_size: int = Field(1024, ge=0, description="Requests that may wait for a free worker slot.")
    queue_timeout_s: float = Field(30.0, gt=0, description="Longest wait in the queue, then 503 + Retry-After.")
    fair_share: bool = Field(
        True, description="When every worker slot is taken (max_in_flight_per_worker), serve the waiting requests "
        "in weighted fair order per API key instead of in arrival order (FIFO)."
    )
    fair_share_hold_s: float = Field(
        0.01, ge=0, le=1, description="Fair share: a slot freed by a key below its share, with nothing of its own "
        "waiting, is kept this long for that key's next request (a trainer's next call) before a waiter gets it."
    )
    key_weights: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict, description="Fair-share weights by key id (key- + the first 8 hex digits of the "
        "key's SHA-256, or anonymous), e.g. key-1a2b3c4d=2,anonymous=0.5; a key not named weighs 1 (env: "
        "ID=W,... or a JSON object)."
    )
    rate_limit_rps: float = Field(0.0, ge=0, description="Requests per second per API key (0 = unlimited).")
    rate_limit_burst: int = Field(0, ge=0, description="Token-bucket size per API key (0 = one second's worth).")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description=f"Client API keys (Bearer); empty = no auth {_LIST}."
    )
    admin_api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description=f"Keys of the /admin API; empty = admin API off {_LIST}."
    )
    worker_api_key: str | None = Field(None, description="Bearer key the router sends to workers.")
    health_interval_s: float = Field(2.0, gt=0, description="Seconds between active /health + /ready probes.")
    health_timeout_s: float = Field(2.0, gt=0, description="Timeout of one probe.")
    health_failure_threshold: int = Field(2, ge=1, description="Failed probes in a row that take a worker out.")
    health_success_threshold: int = Field(1, ge=1, description="Passed probes in a row that bring it back.")
    breaker_failure_threshold: int = Field(3, ge=1, description="Failed requests in a row that open the breaker.")
    breaker_backoff_s: float = Field(1.0, gt=0, description="First open period; doubles per re-opening.")
    breaker_backoff_max_s: float = Field(60.0, gt=0, description="Cap of the open period.")
    client_idle_timeout_s: float = Field(
        75.0, gt=0, description="Close a client connection idle (or sending a request slowly) this long."
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Bodies larger than this get 413 (a batch of long solutions, or a "
        "program a sandbox server then refuses naming its field, fits).")
    ssl_certfile: str | None = Field(None, description="Serve HTTPS with this PEM certificate chain.")
    ssl_keyfile: str | None = Field(None, description="Private key of ssl_certfile.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log verbosity; info logs access lines.")

    @field_validator("workers", "api_keys", "admin_api_keys", "discovery_nameservers", "discovery_dns",
                     mode="before")
    @classmethod
    def _lists(cls, v: object) -> object:
        return split_list(v)

    @field_validator("key_weights", mode="before")
    @classmethod
    def _weights(cls, v: object) -> object:
        if isinstance(v, str) and not v.lstrip().startswith("{"):
            pairs = [item.partition("=") for item in split_list(v)]  # type: ignore[union-attr]
            bad = [f"{name}{eq}{w}" for name, eq, w in pairs if not eq]
            if bad:
                raise ValueError(f"expected ID=WEIGHT entries, got {', '.join(bad)}")
            return {name.strip(): w.strip() for name, _, w in pairs}
        if isinstance(v, str):
            return json.loads(v)
        return v

    @field_validator("workers")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"worker URL must start with http:// or https://: {url!r}")
        return [u.rstrip("/") for u in v]

    @field_validator("policy", "reward_policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"unknown policy {v!r}; choose one of {', '.join(POLICIES)}")
        return v

    @field_validator("discovery_dns")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        from router.discovery import parse_dns_target

        seen: set[tuple[str, int, str]] = set()
        for target in v:
            name, port, scheme = parse_dns_target(target)
            key = (name.lower().rstrip("."), port, scheme)
            if key in seen:
                raise ValueError(f"DNS discovery target {target!r} is given twice")
            seen.add(key)
        return [t.strip() for t in v]

    @model_validator(mode="after")
    def _tls_pair(self) -> _RouterSettings:
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self

    @model_validator(mode="after")
    def _weighted_keys(self) -> _RouterSettings:
        """Each weight names a configured key (a typo would silently weigh 1) and is in (0, 1000]."""
        known = {ANONYMOUS, *(key_id(k) for k in (*self.api_keys, *self.admin_api_keys))}
        for name, weight in self.key_weights.items():
            if name not in known:
                raise ValueError(f"key_weights names {name!r}, which is no configured key's id nor {ANONYMOUS!r}; "
                                 f"the keys' ids are {', '.join(sorted(known - {ANONYMOUS})) or 'none (no api_keys)'}")
            if not 0 < weight <= 1000:
                raise ValueError(f"key_weights: the weight of {name} must be in (0, 1000], got {weight:g}")
        return self


def _policy_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for policy in POLICIES.values():
        for name, info in policy.Config.model_fields.items():
            fields[policy.settings_prefix + name] = (info.annotation, info)
    return fields


RouterSettings = create_model("RouterSettings", __base__=_RouterSettings, __module__=__name__, **_policy_fields())
RouterSettings.__doc__ = "The router's settings, the policies' own included."
