"""Reward routes: the native API (``/v1/reward``, ``/v1/reward/batch``, ``/v1/recipes``) and the trainers'
own remote-RM protocols (OpenRLHF ``/get_reward``, slime ``/slime/reward``), all served by the recipes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, with_config
from pydantic_core import to_json
from typing_extensions import TypedDict

from services.genrm_server.errors import describe_error
from services.genrm_server.reward_service import RewardService
from trainer_client.protocol import (
    RecipeInfo,
    RecipeList,
    RewardBatchRequest,
    RewardBatchResponse,
    RewardFields,
    RewardRequest,
    RewardResult,
    error_body,
)

router = APIRouter()

# Text a chat template or the tokenizer leaves around a response in OpenRLHF's decoded `query`.
_END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<eos>", "<|end|>")
_ASSISTANT_MARKERS = ("<|im_start|>assistant\n", "<|start_header_id|>assistant<|end_header_id|>\n\n")
_USER_MARKERS = (("<|im_start|>user\n", "<|im_end|>"), ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"))


def _service(request: Request) -> RewardService:
    return request.app.state.rewards


@router.post("/v1/reward", response_model=RewardResult)
async def reward(sample: RewardRequest, request: Request) -> dict[str, Any]:
    """Score one sample with its recipe (or the server's default)."""
    return await _service(request).score(sample)


@with_config(ConfigDict(extra="forbid"))  # as RewardBatchRequest: an unknown top-level field is a 400
class _FieldsBatch(TypedDict):
    """The fast path: a batch whose every sample is valid parses straight into plain field dicts."""

    samples: Annotated[list[RewardFields], Field(max_length=16384)]


_FIELDS_BATCH = TypeAdapter(_FieldsBatch)


_BATCH_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": RewardBatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


@router.post("/v1/reward/batch", response_model=RewardBatchResponse, openapi_extra=_BATCH_BODY)
async def reward_batch(request: Request) -> Response:
    """Score many samples concurrently; results in order; a bad item gets an item-level error.

    Served by :class:`BatchRoute` below FastAPI; this route documents it in the OpenAPI schema."""
    return Response(await score_batch_body(_service(request), await request.body()), media_type="application/json")


async def score_batch_body(service: RewardService, raw: bytes) -> bytes:
    """The batch route's work: raw JSON in, raw JSON out; a ValidationError when the body itself is bad."""
    try:
        # One pass of pydantic-core over the raw bytes (Rust JSON + validation) into dicts of the samples'
        # fields: several times faster than json.loads then a model per sample (RewardFields says why).
        samples: list[Any] = _FIELDS_BATCH.validate_json(raw)["samples"]
        validated = True
    except ValidationError:
        # Some sample is bad (an item-level error) or the body itself is (a 400 naming the field).
        samples, validated = RewardBatchRequest.model_validate_json(raw).samples, False
    items = await service.score_batch(samples, validated=validated)
    # Serialised directly (Rust JSON encoder): re-validating thousands of items we just built against the
    # response model cost more than scoring them. The model still documents the shape in the OpenAPI schema.
    return to_json({"results": items})


class BatchRoute:
    """ASGI middleware answering ``POST /v1/reward/batch`` itself, beneath FastAPI's routing and request
    objects: with judge-free recipes those were a sixth of a batch's server time (py-spy). Installed inside
    the body limit and request metrics, so both still apply; errors use the same envelope."""

    path = "/v1/reward/batch"

    def __init__(self, app: Any, service: RewardService):
        self.app, self.service = app, service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        status = 200
        try:
            body = await score_batch_body(self.service, b"".join(chunks))
        except Exception as exc:  # the envelope every other route uses (errors.py)
            status, message_text, param = describe_error(exc)
            body = to_json(error_body(status, message_text, param=param))
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@router.get("/v1/recipes", response_model=RecipeList)
async def recipes(request: Request) -> RecipeList:
    service = _service(request)
    return RecipeList(
        default=service.default,
        recipes=[
            RecipeInfo(name=r.name, description=r.description, keys=["score", *r.keys], settings=r.settings(),
                       uses_judge=r.uses_judge)
            for r in service.recipes.values()
        ],
    )


# -- OpenRLHF ------------------------------------------------------------------------------------


class OpenRLHFRequest(BaseModel):
    query: list[str] = Field(default_factory=list, description="Prompt + response as decoded by OpenRLHF.")
    prompts: list[str] = Field(default_factory=list)
    labels: list[str | int | float | None] = Field(default_factory=list)


def split_openrlhf_query(query: str, prompt: str) -> str:
    """The response part of OpenRLHF's ``query`` (prompt + response, special tokens and padding kept)."""
    at = query.find(prompt) if prompt else -1
    if at != -1:
        response = query[at + len(prompt) :]
    else:  # prompt not found verbatim: cut after the last assistant header of a known template
        cut = max((query.rfind(m) + len(m) if m in query else -1) for m in _ASSISTANT_MARKERS)
        response = query[cut:] if cut > 0 else query
    stripped = True
    while stripped:  # end-of-sequence and padding text, possibly repeated
        stripped = False
        for marker in _END_MARKERS:
            if response.endswith(marker):
                response, stripped = response[: -len(marker)], True
    return response


def question_of(prompt: str) -> str:
    """The user's text inside a chat-templated prompt (the judge wants the problem, not the template)."""
    for start, end in _USER_MARKERS:
        if start in prompt:
            body = prompt[prompt.rfind(start) + len(start) :]
            return body.split(end, 1)[0]
    return prompt


@router.post("/get_reward")
async def openrlhf_get_reward(body: OpenRLHFRequest, request: Request,
                              recipe: str | None = Query(None, description="Recipe; default: the server's.")):
    """OpenRLHF remote RM (``--remote_rm_url http://router/get_reward``). ``extra_logs`` holds numbers only."""
    service = _service(request)
    chosen = service.recipe(recipe)
    samples = []
    for i, query in enumerate(body.query):
        prompt = body.prompts[i] if i < len(body.prompts) else ""
        label = body.labels[i] if i < len(body.labels) else None
        samples.append({"recipe": chosen.name, "question": question_of(prompt),
                        "solution": split_openrlhf_query(query, prompt), "ground_truth": label})
    items = await service.score_batch(samples)
    failed = next((it for it in items if it.get("error") is not None), None)
    if failed is not None:  # OpenRLHF wants all or nothing; keep the item's status
        err = failed["error"]
        return JSONResponse(error_body(err["code"], f"sample {failed['index']}: {err['message']}",
                                       param=err["param"]), status_code=err["code"])
    results = [it["result"] for it in items]
    scores = [r["score"] for r in results]
    # OpenRLHF turns every extra_logs value into a tensor: only the recipe's numeric keys, always the same set.
    extra = {k: [float(r[k]) for r in results] for k in chosen.log_keys}
    return {"rewards": scores, "scores": scores, "extra_logs": extra}


# -- slime -----------------------------------------------------------------------------------------


class SlimeRequest(BaseModel):
    prompt: str = ""
    response: str
    label: str | int | float | None = None


@router.post("/slime/reward")
async def slime_reward(body: SlimeRequest, request: Request,
                       recipe: str | None = Query(None, description="Recipe; default: the server's.")):
    """slime remote RM (``--rm-type remote_rm --rm-url http://router/slime/reward``): the score is under
    ``score`` (``--reward-key score``), with the recipe's keys beside it."""
    sample = RewardRequest(recipe=recipe, question=question_of(body.prompt), solution=body.response,
                           ground_truth=body.label)
    return await _service(request).score(sample)
