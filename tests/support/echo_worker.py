"""A controllable worker for router tests, run as a real process:
``python tests/support/echo_worker.py PORT [OPTIONS]``.

It speaks real HTTP (FastAPI on uvicorn) and says who it is, so tests can see where the router sent
each request and make one worker misbehave on cue:

- ``GET /health``, ``GET /ready`` (503 after ``POST /control {"ready": false}``), ``GET /v1/models``
  (``--models a,b``), ``GET /v1/recipes`` (``--recipes x,y``), ``GET /seen`` (requests received: path,
  affinity key, group ids, auth header present).
- Any other request is answered ``{"worker": PORT, "path": ..., "body": <the JSON body>}`` after
  ``delay_s``; ``POST /control`` sets ``delay_s``, ``status`` (answer every proxied request with it)
  and ``ready``. (Workers that drop connections or hang are ``tests/support/bad_worker.py``.)
- ``POST /v1/reward/batch`` answers one item per sample: ``{"index": i, "result": {"score": ..., "worker":
  PORT}}`` where score is the sample's ``ground_truth`` as a float, or an item-level error when the
  sample has ``"bad": true``.
- ``POST /v1/chat/completions`` with ``"stream": true`` streams ``chunks`` SSE events ``interval_s`` apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

STATE: dict[str, Any] = {"delay_s": 0.0, "status": 200, "ready": True, "seen": []}
app = FastAPI()


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@app.get("/ready")
async def ready() -> Response:
    if STATE["ready"]:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"error": {"message": "not ready"}}, status_code=503)


@app.get("/v1/models")
async def models() -> dict:
    return {"object": "list", "data": [{"id": m, "object": "model"} for m in STATE["models"]]}


@app.get("/v1/recipes")
async def recipes() -> dict:
    return {"default": STATE["recipes"][0] if STATE["recipes"] else "math",
            "recipes": [{"name": r} for r in STATE["recipes"]]}


@app.get("/seen")
async def seen() -> list:
    return STATE["seen"]


@app.post("/control")
async def control(request: Request) -> dict:
    STATE.update(await request.json())
    return {k: v for k, v in STATE.items() if k != "seen"}


@app.api_route("/{path:path}", methods=["GET", "POST", "DELETE", "PUT"])
async def anything(path: str, request: Request) -> Response:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    STATE["seen"].append({"path": "/" + path, "affinity": request.headers.get("x-affinity-key"),
                          "authorization": request.headers.get("authorization"),
                          "groups": _groups(body)})
    if STATE["delay_s"]:
        await asyncio.sleep(STATE["delay_s"])
    if STATE["status"] != 200:
        return JSONResponse({"error": {"message": f"worker {PORT} answers {STATE['status']}"}},
                            status_code=STATE["status"])
    if path == "v1/reward/batch" and isinstance(body, dict):
        return JSONResponse({"results": [_score(i, s) for i, s in enumerate(body.get("samples", []))]})
    if isinstance(body, dict) and body.get("stream"):
        return StreamingResponse(_stream(int(body.get("chunks", 5)), float(body.get("interval_s", 0.1))),
                                 media_type="text/event-stream")
    pad = int(body.get("pad_bytes", 0)) if isinstance(body, dict) else 0  # a large answer, as /run_code's can be
    return JSONResponse({"worker": PORT, "path": "/" + path, "body": body, "pad": "x" * pad})


def _groups(body: Any) -> list:
    if isinstance(body, dict) and isinstance(body.get("samples"), list):
        return [s.get("group_id") for s in body["samples"] if isinstance(s, dict)]
    return [body.get("group_id")] if isinstance(body, dict) and "group_id" in body else []


def _score(i: int, sample: Any) -> dict:
    if not isinstance(sample, dict) or sample.get("bad"):
        return {"index": i, "result": None, "error": {"message": "bad sample", "type": "BadRequestError",
                                                       "param": f"samples.{i}", "code": 422}}
    return {"index": i, "result": {"score": float(sample.get("ground_truth", 0)), "worker": PORT}}


async def _stream(chunks: int, interval_s: float):
    for n in range(chunks):
        yield f"data: {json.dumps({'worker': PORT, 'n': n})}\n\n"
        await asyncio.sleep(interval_s)
    yield "data: [DONE]\n\n"


PORT = 0

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--models", default="judge")
    p.add_argument("--recipes", default="math,fapo")
    a = p.parse_args()
    PORT = a.port
    STATE["models"] = [m for m in a.models.split(",") if m]
    STATE["recipes"] = [r for r in a.recipes.split(",") if r]
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")
