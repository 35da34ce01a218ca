"""The whole wire contract of genrm-platform as pydantic models, in one place.

The trainer client, the router and the GenRM server all import this module, so a field means the
same thing on every hop. It depends on pydantic only (the client's footprint stays small).
OpenAI-compatible shapes follow vLLM's responses field for field, so any OpenAI client works.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator
from typing_extensions import NotRequired, Required, TypedDict

from trainer_client.grouping import QUESTION_FIELDS

# ---------------------------------------------------------------------------------------------
# Errors


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorInfo


def error_info(status: int, message: str, *, param: str | None = None, type_: str | None = None) -> ErrorInfo:
    """The error object of a response or of one batch item, typed by its status."""
    kind = type_ or _ERROR_TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")
    return ErrorInfo(message=message, type=kind, param=param, code=status)


def error_body(status: int, message: str, *, param: str | None = None, type_: str | None = None) -> dict:
    """Build the JSON body every 4xx/5xx of the platform carries."""
    return ErrorResponse(error=error_info(status, message, param=param, type_=type_)).model_dump()


_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}

# ---------------------------------------------------------------------------------------------
# Requests


class _Request(BaseModel):
    # Unknown OpenAI fields (logit_bias, user, ...) are accepted and ignored, like vLLM does.
    model_config = ConfigDict(extra="allow")


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(_Request):
    """Sampling parameters shared by chat and text completions (OpenAI names + vLLM extras)."""

    model: str | None = Field(None, description="Served model name; omitted = the server's only model.")
    max_tokens: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Tokens to generate at most; omitted = up to the context length."
    )
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = Field(
        None, description="0 = greedy. Omitted = the server's default (1.0)."
    )
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = Field(
        None, description="Sample among the k likeliest tokens; 0 or -1 = off. Omitted = the model's default."
    )
    n: Annotated[int, Field(ge=1, le=128)] = 1
    stop: str | list[str] | None = None
    # A 64-bit seed, as vLLM's own bound (torch.iinfo(torch.long)): a larger one overflowed in torch's
    # manual_seed, a 500 instead of a 400 naming the field.
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # vLLM extensions, used by benchmarks to force a fixed output length.
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0)] = 0

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str]:
        if v is None:
            return []
        stops = [v] if isinstance(v, str) else v
        if any(s == "" for s in stops):
            raise ValueError("stop strings must be non-empty")
        return stops

    @property
    def stop_list(self) -> list[str]:
        return self.stop or []  # type: ignore[return-value]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """Content as plain text (OpenAI's list-of-parts form is joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    add_generation_prompt: bool = True


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(..., description="A prompt, or a list of prompts (one choice set each).")
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("prompt list must not be empty")
        return v

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# ---------------------------------------------------------------------------------------------
# Responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


def now() -> int:
    return int(time.time())


FinishReason = Literal["stop", "length", "abort"] | None


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)


class ChatCompletionChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    prompt_logprobs: Any = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionStreamChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None
    prompt_logprobs: Any = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "genrm-platform"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---------------------------------------------------------------------------------------------
# Reward API (/v1/reward, /v1/reward/batch, /v1/recipes)


class OverlongShaping(BaseModel):
    """DAPO overlong shaping: ``min(-(n - (max_resp_len - buffer_len)) / buffer_len * penalty_factor, 0)``.

    Off unless asked for: verl's DAPO reward manager already adds it trainer-side; never apply it twice.
    """

    max_resp_len: Annotated[int, Field(gt=0)]
    buffer_len: Annotated[int, Field(gt=0)]
    # Finite: an Infinity factor made the score -inf, which JSON carries as null (a 200 with no score).
    penalty_factor: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0


def _number_text(value: int | float) -> str | None:
    # NaN / ±Infinity (Python's json accepts them; pandas writes NaN for a missing label) are a missing
    # label, as orjson (the fast client) already sends them (null), never the answer text "nan" or "inf":
    # a recipe that needs one then says `ground_truth is required`.
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


# Normalisation written into the types, not as field validators: a union member's validator runs only for
# inputs of that member (a number label, a null extra_info), so the usual sample (text label, dict or no
# extra_info) validates without calling Python. RewardFields below relies on it.
# A label is text (a number as its text); the code recipe's test cases are an object (or its JSON text).
GroundTruth = str | Annotated[int | float, AfterValidator(_number_text)] | dict[str, Any] | None
ExtraInfo = dict[str, Any] | Annotated[None, AfterValidator(lambda _: {})]  # verl passes extra_info=None


class RewardRequest(BaseModel):
    """One sample to score. ``prompt``/``response`` are accepted as aliases of ``question``/``solution``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    recipe: str | None = Field(None, description="Recipe name; omitted = the server's default recipe.")
    data_source: str | None = None
    question: str | None = Field(None, validation_alias=AliasChoices(*QUESTION_FIELDS))
    solution: str = Field(..., validation_alias=AliasChoices("solution", "response", "solution_str"))
    ground_truth: GroundTruth = None
    extra_info: ExtraInfo = Field(default_factory=dict)
    group_id: str | int | None = Field(None, description="GRPO group id: routes a group to one replica.")
    return_critique: bool = False
    overlong: OverlongShaping | None = None


def _fields_of(model: type[BaseModel]) -> Any:
    """A TypedDict with the model's fields, aliases, defaults and config: validates into plain dicts.

    A model instance costs more to build than its fields cost to validate (1.3 us a sample here); a batch
    of judge-free samples only needs the values."""
    if model.__pydantic_decorators__.field_validators or model.__pydantic_decorators__.model_validators:
        raise TypeError(f"{model.__name__}: put validation in the field types; a TypedDict cannot carry validators")
    fields = {name: (Required if info.is_required() else NotRequired)[Annotated[info.annotation, info]]
              for name, info in model.model_fields.items()}
    typed = TypedDict(f"{model.__name__}Fields", fields)  # type: ignore[operator]
    typed.__pydantic_config__ = model.model_config  # type: ignore[attr-defined]
    return typed


# RewardRequest's fields as a plain dict, every key present (defaults filled): what a recipe's inline rule
# reads (``Recipe.score_inline``), whether the sample came alone (``vars(request)``) or in a batch.
RewardFields = _fields_of(RewardRequest)


class RewardBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Any JSON value per item: a sample that is not an object gets its own item error, the others are scored.
    samples: Annotated[list[Any], Field(max_length=16384, description="Samples (objects, as RewardRequest).")]


class RewardResult(BaseModel):
    """``score`` plus the recipe's fixed extra keys (same keys for every sample of a recipe)."""

    model_config = ConfigDict(extra="allow")
    score: float


class RewardBatchItem(BaseModel):
    index: int
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None


class RewardBatchResponse(BaseModel):
    results: list[RewardBatchItem]


class RecipeInfo(BaseModel):
    name: str
    description: str
    keys: list[str]
    settings: dict[str, Any]
    uses_judge: bool


class RecipeList(BaseModel):
    default: str
    recipes: list[RecipeInfo]


# ---------------------------------------------------------------------------------------------
# SandboxFusion's /run_code, field for field (bytedance/SandboxFusion sandbox/server/sandbox_api.py and
# sandbox/runners/types.py), so verl's `reward.sandbox_fusion.url` client works unchanged. `language` is a
# plain string here: a language this server does not run is refused with a message naming the field.


class RunCodeRequest(BaseModel):
    compile_timeout: float = Field(10, description="compile timeout for compiled languages (seconds)")
    run_timeout: float = Field(10, description="code run timeout (seconds)")
    memory_limit_MB: int = Field(-1, description="maximum memory in megabytes; -1: the server's default")
    code: str = Field(..., description="the code to run")
    stdin: str | None = Field(None, description="text passed to the program's stdin")
    language: str = Field(..., description="the language of the code: python or cpp")
    files: dict[str, str | None] = Field(default_factory=dict, description="file path -> base64 content")
    fetch_files: list[str] = Field(default_factory=list, description="file paths to return after the run")


class CommandRunResult(BaseModel):
    """One command (the compiler, or the program): how it ended and what it printed."""

    status: Literal["Finished", "Error", "TimeLimitExceeded"]
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class RunCodeResponse(BaseModel):
    """``Success``: every command finished with 0; ``Failed``: a non-zero exit or a time limit (compile or
    run); ``SandboxError``: the sandbox itself failed (``message`` says how)."""

    status: Literal["Success", "Failed", "SandboxError"]
    message: str
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
