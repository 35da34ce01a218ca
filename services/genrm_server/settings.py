"""Settings of one GenRM server replica (flags, ``GENRM_SERVER_*`` env, ``server:`` YAML section)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings_io import LIST_NOTE, ComponentSettings, split_list
from services.genrm_server.engines.registry import ENGINES, EngineName, engines_help, engines_needing


class ServerSettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="GENRM_SERVER_", extra="forbid")
    yaml_section: ClassVar[str] = "server"

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 = any free port).")
    engine: EngineName = Field("transformers", description=f"How text is generated: {engines_help()}.")
    model: str | None = Field(
        None,
        description=f"Local model directory ({'/'.join(engines_needing('model'))} engines). Nothing is downloaded.",
    )
    served_model_name: str | None = Field(
        None, description="Name clients use in `model`; default: the directory name or upstream's model."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device for the transformers engine.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype (auto: bfloat16 on CUDA, float32 on CPU)."
    )
    torch_threads: int = Field(
        0, ge=0, le=1024,
        description="transformers engine: CPU threads for torch ops (0 = torch's default, all cores). Replicas "
        "sharing a machine must split the cores (`genrm up` does): oversubscribed OpenMP pools stall.",
    )
    max_batch_size: int = Field(
        32, ge=1, le=4096, description="Continuous batching: sequences running at once at most.")
    max_wait_ms: float = Field(
        5.0, ge=0, le=10_000,
        description="Continuous batching: how long a new request may wait for others to be prefilled with it.",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Context length (prompt + output); default: the model's own."
    )
    kv_cache: Literal["auto", "static", "dynamic"] = Field(
        "auto", description="transformers engine: `static` gives each running sequence a preallocated KV slot "
        "(--max-batch-size of them, --kv-cache-len tokens each) and, on CUDA, replays decode steps as CUDA graphs; "
        "`dynamic` grows transformers' DynamicCache. auto: static on CUDA when the model allows it, else dynamic.",
    )
    kv_cache_len: int = Field(
        0, ge=0, description="Static KV cache: tokens (prompt + output) per slot, which caps the context length; "
        "0 = the context length, lowered to what --kv-cache-memory of the free GPU memory holds.",
    )
    kv_cache_memory: float = Field(
        0.6, gt=0, le=0.95, description="Static KV cache on CUDA: at most this fraction of the GPU memory free "
        "after the weights are loaded (the rest is for prefill activations and other processes).",
    )
    cuda_graphs: bool = Field(True, description="Static KV cache on CUDA: replay decode steps as CUDA graphs.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Request bodies larger than this get 413 (64 MiB without a model: "
        "a program over --code-max-program-bytes then gets a 400 naming its field).")
    upstream_url: str | None = Field(
        None, description="openai engine: base URL of an OpenAI-compatible server, e.g. http://host:8000/v1."
    )
    upstream_api_key: str | None = Field(None, description="openai engine: API key sent to the upstream.")
    upstream_model: str | None = Field(
        None, description="openai engine: model name at the upstream; default: its first listed model."
    )
    upstream_timeout_s: float = Field(600.0, gt=0, description="openai engine: per-request timeout.")
    upstream_max_connections: int = Field(256, ge=1, description="openai engine: pooled connections.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm engine: share of GPU memory.")
    enable_prefix_caching: bool = Field(True, description="vllm engine: automatic prefix caching.")
    recipes_file: str | None = Field(
        None, description="YAML file of custom judge recipes (`recipes: [...]`, see recipes/custom.py), served "
        "beside the built-ins. A bad file stops the server with a message naming the file, recipe and field.",
    )
    recipe: str = Field("math", description="Default recipe of the reward API (GET /v1/recipes lists them).")
    math_mode: Literal["boxed", "answer", "answer_or_boxed", "math_verify"] = Field(
        "boxed", description="math recipe: answer extraction (../shared/specs/math-rule.md beside the repository), "
        "or symbolic math_verify."
    )
    math_verify_timeout_s: float = Field(5.0, gt=0, le=600, description="math_verify mode: time limit per sample.")
    reward_cache_size: int = Field(
        65536, ge=0, description="Judge results kept for identical samples (LRU; 0 = off). In-flight ones coalesce."
    )
    judge_max_tokens: int = Field(16384, ge=1, description="Judge recipes: max tokens of the judge's answer.")
    judge_timeout_s: float = Field(
        1800.0, gt=0, description="Judge recipes: a call past this fails (judge_ok=false), so no sample waits forever."
    )
    shutdown_delay_s: float = Field(
        0.0, ge=0, le=3600, description="On SIGTERM: /ready answers 503 at once but the server keeps serving this "
        "long before it closes its listener, so routers stop sending before connections are refused (a second "
        "signal skips the rest).",
    )
    shutdown_timeout_s: float = Field(
        20.0, ge=0, description="On SIGTERM, after the delay: how long the requests in flight may take to finish "
        "before they are cancelled. Where scale-down must not cut judge calls, at least judge_timeout_s.",
    )
    fapo_flaw_penalty: float = Field(1.0, ge=0, description="fapo recipe: subtracted from +1 for a flawed positive.")
    code_sandbox: Literal["auto", "bwrap", "none", "off"] = Field(
        "auto", description="code recipe and /run_code: `bwrap` runs every program in a bubblewrap sandbox (no "
        "network, read-only root, private /tmp, limits; the server refuses to start if it cannot); `none` runs "
        "programs unsandboxed (trusted code only; logged loudly, shown in /v1/recipes); `off` serves neither. "
        "auto: bwrap on a server without a model (--engine none, or --recipe code), off on a judge server.",
    )
    sandbox_workers: int = Field(0, ge=0, le=1024, description="Programs running at once (0 = the CPU cores).")
    sandbox_queue_size: int = Field(
        1024, ge=0, description="Runs that may wait for a sandbox worker; past it 503 with Retry-After.")
    code_scoring: Literal["continuous", "binary"] = Field(
        "continuous", description="code recipe: pass rate, or 1/0 stopping at the first failure (extra_info.scoring).")
    code_max_tests: int = Field(
        0, ge=0, description="code recipe: score only the first N tests (0 = all; verl scores 10; "
        "extra_info.max_tests).")
    code_float_tolerance: float = Field(
        1e-6, ge=0, description="code recipe: absolute or relative tolerance of two float tokens or values.")
    code_run_timeout_s: float = Field(
        6.0, gt=0, description="Wall time (and CPU time) of one test run (extra_info.run_timeout, /run_code "
        "run_timeout).")
    code_memory_limit_mb: int = Field(
        1024, ge=16, description="Address space of one run in MB (extra_info.memory_limit_MB, /run_code "
        "memory_limit_MB).")
    code_compile_timeout_s: float = Field(20.0, gt=0, description="C++ compile time limit (/run_code compile_timeout).")
    code_max_run_timeout_s: float = Field(
        60.0, gt=0, description="Highest run time a request may ask for; above it a 400 naming the field.")
    code_max_memory_limit_mb: int = Field(
        8192, ge=16, description="Highest memory limit a request may ask for; above it a 400 naming the field.")
    code_max_program_bytes: int = Field(
        1 << 20, ge=1024, description="Largest program (a solution, or /run_code's code); above it a 400 naming "
        "the field.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=f"Bearer keys every route but /health and /ready requires; empty = no auth {LIST_NOTE}. "
        "The router sends one with --worker-api-key.",
    )
    ssl_certfile: str | None = Field(None, description="Serve HTTPS with this PEM certificate chain.")
    ssl_keyfile: str | None = Field(None, description="Private key of ssl_certfile.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")

    @field_validator("upstream_url")
    @classmethod
    def _upstream(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, e.g. http://127.0.0.1:8000/v1: {v!r}")
        return v.rstrip("/") if v else v

    @field_validator("api_keys", mode="before")
    @classmethod
    def _key_list(cls, v: object) -> object:
        return split_list(v)

    @field_validator("recipes_file")
    @classmethod
    def _recipes_file_loads(cls, v: str | None) -> str | None:
        from services.genrm_server.recipes.custom import load_custom_recipes

        if v:
            load_custom_recipes(v)  # a bad file is a settings error (exit 2) naming the file, recipe and field
        return v

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v: str, info: ValidationInfo) -> str:
        names = recipe_names(info.data.get("recipes_file"))  # validated before `recipe` (declared above it)
        if v not in names:
            raise ValueError(f"unknown recipe {v!r}; choose one of {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _sandbox_role(self) -> ServerSettings:
        """``--recipe code`` without an engine named is a CPU-only sandbox server: no model to load."""
        if self.recipe == "code" and "engine" not in self.model_fields_set:
            self.engine = "none"
        if not self.has_model and "max_body_bytes" not in self.model_fields_set:
            self.max_body_bytes = 64 * 1024 * 1024
        if self.recipe == "code" and self.sandbox_isolation == "off":
            raise ValueError("recipe 'code' needs a sandbox; code_sandbox is off")
        if not self.has_model and self.recipe not in ("math", "code"):
            raise ValueError(f"recipe {self.recipe!r} needs a model to judge with; engine 'none' serves math and code")
        return self

    @property
    def has_model(self) -> bool:
        return self.engine != "none"

    @property
    def sandbox_isolation(self) -> Literal["bwrap", "none", "off"]:
        """code_sandbox with auto resolved: bwrap without a model, off beside one."""
        if self.code_sandbox == "auto":
            return "off" if self.has_model else "bwrap"
        return self.code_sandbox

    @model_validator(mode="after")
    def _engine_needs(self) -> ServerSettings:
        for name, what in ENGINES[self.engine].needs.items():
            if not getattr(self, name):
                raise ValueError(f"engine '{self.engine}' needs `{name}` ({what})")
        return self


def recipe_names(recipes_file: str | None) -> list[str]:
    """The built-in recipes and those of ``recipes_file`` (a bad file is a ValueError naming what is wrong)."""
    from services.genrm_server.recipes import RECIPES
    from services.genrm_server.recipes.custom import load_custom_recipes

    return [*RECIPES, *(r.name for r in load_custom_recipes(recipes_file))] if recipes_file else list(RECIPES)
