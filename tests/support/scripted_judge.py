"""A scripted OpenAI-compatible judge, run as a real process by the tests:
``python tests/support/scripted_judge.py PORT``.

Its reply is chosen by the prompt: text between ``<<reply:`` and ``>>`` is answered verbatim, ``<<sleep:S>>``
delays the answer by S seconds, ``<<context_error>>`` refuses any request that sets max_tokens the way vLLM
does when prompt + max_tokens exceeds its context, ``<<no_stream>>`` answers a streamed request with plain JSON
(as some proxies and hosted judges do); otherwise it answers ``\\boxed{-1}``. Prompts received
are kept and served at ``GET /prompts`` so tests can see exactly what the judge was asked. Streams like
vLLM (SSE, usage chunk).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

app = FastAPI()
PROMPTS: list[str] = []


def _reply_for(prompt: str) -> tuple[str, float]:
    reply = re.search(r"<<reply:(.*?)>>", prompt, re.S)
    sleep = re.search(r"<<sleep:([\d.]+)>>", prompt)
    return (reply.group(1) if reply else "\\boxed{-1}"), (float(sleep.group(1)) if sleep else 0.0)


@app.get("/v1/models")
async def models() -> dict:
    return {"object": "list", "data": [{"id": "scripted-judge", "object": "model", "max_model_len": 32768}]}


@app.get("/prompts")
async def prompts() -> list[str]:
    return PROMPTS


@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    prompt = body["messages"][-1]["content"]
    PROMPTS.append(prompt)
    if "<<context_error>>" in prompt and body.get("max_tokens") is not None:  # vLLM's answer, param null
        asked = body["max_tokens"]
        message = (f"This model's maximum context length is 32768 tokens. However, you requested "
                   f"{asked + 1000} tokens (1000 in the messages, {asked} in the completion).")
        return JSONResponse({"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}},
                            status_code=400)
    text, delay = _reply_for(prompt)
    await asyncio.sleep(delay)
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 3}
    if "<<no_stream>>" in prompt:
        return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": "scripted-judge",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage}
    head = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": "scripted-judge"}

    def event(payload: dict) -> bytes:
        return b"data: " + json.dumps({**head, **payload}).encode() + b"\n\n"

    async def stream():
        yield event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        yield event({"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}]})
        yield event({"choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.get("/ready")
async def ready() -> dict:
    return {"status": "ready"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
