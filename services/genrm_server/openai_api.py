"""OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Responses and SSE chunks are shaped like vLLM's, so OpenAI SDKs, vLLM-aware routers and trainers
that already talk to ``vllm serve`` work unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from services.genrm_server.choices import ChoiceResult, MergedChoices, choice_params
from services.genrm_server.engines import Engine, EngineError, GenerationInput, SamplingParams
from services.genrm_server.metrics import ServerMetrics
from trainer_client.protocol import (
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatResponseMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    SamplingFields,
    UsageInfo,
    error_body,
    new_id,
    now,
)

router = APIRouter()
T = TypeVar("T")


class UnknownModel(EngineError):
    status = 404


def _state(request: Request) -> tuple[Engine, ServerMetrics]:
    return request.app.state.engine, request.app.state.metrics


def _check_model(requested: str | None, engine: Engine) -> str:
    if not engine.serves_model:
        raise UnknownModel("this server has no model (--engine none): it runs code rewards (recipe code, "
                           "/run_code); send model requests to a judge server", param="model")
    if requested is not None and requested != engine.model_name:
        raise UnknownModel(
            f"The model `{requested}` does not exist. This server serves `{engine.model_name}`.", param="model"
        )
    return engine.model_name


def _sampling(body: SamplingFields) -> SamplingParams:
    return SamplingParams(
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=body.stop_list,
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        min_tokens=body.min_tokens,
    )


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work`` unless the client disconnects first; then cancel it (frees engine slots).

    Errors of ``work`` (engine input errors included) propagate, so they still become 4xx responses.
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


def _usage(results: list[ChoiceResult], n: int) -> UsageInfo:
    # Prompt tokens count once per prompt (vLLM's convention), not once per choice.
    prompt = sum(r.final.prompt_tokens for r in results[::n] if r.final)
    completion = sum(r.final.completion_tokens for r in results if r.final)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _count(metrics: ServerMetrics, usage: UsageInfo) -> None:
    metrics.prompt_tokens.inc(usage.prompt_tokens)
    metrics.generation_tokens.inc(usage.completion_tokens)


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    engine, _ = _state(request)
    if not engine.serves_model:
        return ModelList(data=[])
    return ModelList(data=[ModelCard(id=engine.model_name, root=engine.model_root, max_model_len=engine.max_model_len)])


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    engine, metrics = _state(request)
    model = _check_model(body.model, engine)
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    inp = GenerationInput(
        messages=messages, add_generation_prompt=body.add_generation_prompt, incremental=body.stream
    )
    params = _sampling(body)
    merged = MergedChoices(engine, [(inp, choice_params(params, i)) for i in range(body.n)])
    if body.stream:
        await merged.first()  # engine input errors become a 4xx here, before any byte is sent
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_chat_chunks(merged, model, body.n, include_usage, metrics))
    results = await _until_disconnect(request, merged.collect(body.n))
    if results is None:
        return Response(status_code=499)
    usage = _usage(results, body.n)
    _count(metrics, usage)
    return ChatCompletionResponse(
        model=model,
        usage=usage,
        choices=[
            ChatCompletionChoice(
                index=r.index,
                message=ChatResponseMessage(content="".join(r.text)),
                finish_reason=r.final.finish_reason if r.final else "abort",
                stop_reason=r.final.stop_reason if r.final else None,
            )
            for r in results
        ],
    )


@router.post("/v1/completions", response_model=CompletionResponse)
async def completions(body: CompletionRequest, request: Request) -> Any:
    engine, metrics = _state(request)
    model = _check_model(body.model, engine)
    params = _sampling(body)
    prompts = body.prompts
    jobs = [
        (GenerationInput(prompt=p, incremental=body.stream), choice_params(params, i))
        for p in prompts
        for i in range(body.n)
    ]
    merged = MergedChoices(engine, jobs)
    if body.stream:
        await merged.first()
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_completion_chunks(merged, model, body.n, include_usage, metrics))
    results = await _until_disconnect(request, merged.collect(len(jobs)))
    if results is None:
        return Response(status_code=499)
    usage = _usage(results, body.n)
    _count(metrics, usage)
    return CompletionResponse(
        model=model,
        usage=usage,
        choices=[
            CompletionChoice(
                index=r.index,
                text=(prompts[r.index // body.n] if body.echo else "") + "".join(r.text),
                finish_reason=r.final.finish_reason if r.final else "abort",
                stop_reason=r.final.stop_reason if r.final else None,
            )
            for r in results
        ],
    )


# -- streaming -------------------------------------------------------------------------------


def _sse(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def _stream_events(
    merged: MergedChoices, n: int, include_usage: bool, metrics: ServerMetrics, head: dict[str, Any],
    choice: Any, opening: list[dict[str, Any]],
) -> AsyncIterator[bytes]:
    """Shared SSE loop: opening chunks, one chunk per delta, optional usage chunk, ``[DONE]``."""
    prompt_tokens = completion_tokens = 0
    try:
        for c in opening:
            yield _event({**head, "choices": [c]})
        async for index, delta in merged:
            yield _event({**head, "choices": [choice(index, delta)]})
            if delta.finish_reason is not None:
                if index % n == 0:
                    prompt_tokens += delta.prompt_tokens
                completion_tokens += delta.completion_tokens
        if include_usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
            yield _event({**head, "choices": [], "usage": usage})
    except EngineError as exc:  # mid-stream failure: tell the client in-band, as vLLM does
        yield _event(error_body(exc.status, exc.message, param=exc.param))
    finally:
        await merged.aclose()
        metrics.prompt_tokens.inc(prompt_tokens)
        metrics.generation_tokens.inc(completion_tokens)
    yield b"data: [DONE]\n\n"


def _chat_chunks(merged: MergedChoices, model: str, n: int, include_usage: bool, metrics: ServerMetrics):
    head = {"id": new_id("chatcmpl"), "object": "chat.completion.chunk", "created": now(), "model": model}

    def choice(index: int, delta: Any) -> dict[str, Any]:
        return {"index": index, "delta": {"content": delta.text}, "logprobs": None,
                "finish_reason": delta.finish_reason, "stop_reason": delta.stop_reason}

    opening = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None} for i in range(n)]
    return _stream_events(merged, n, include_usage, metrics, head, choice, opening)


def _completion_chunks(
    merged: MergedChoices, model: str, n: int, include_usage: bool, metrics: ServerMetrics
):
    head = {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": model}

    def choice(index: int, delta: Any) -> dict[str, Any]:
        return {"index": index, "text": delta.text, "logprobs": None,
                "finish_reason": delta.finish_reason, "stop_reason": delta.stop_reason}

    return _stream_events(merged, n, include_usage, metrics, head, choice, [])
