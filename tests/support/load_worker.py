"""A worker that reports its load, for the multi-router tests (``python tests/support/load_worker.py PORT [--vllm]``).

Real HTTP (FastAPI on uvicorn) inside the GenRM server's own ``LoadReport`` middleware, so every answer carries
the ORCA ``endpoint-load-metrics`` header exactly as a GenRM server sends it (requests in flight and their
average). Any POST is answered ``{"worker": PORT}`` after ``delay_s`` (``POST /control {"delay_s": S}``), or after
the body's own ``sleep_s``; ``GET /seen`` lists the ``X-Affinity-Key`` of each POST received.

With ``--vllm`` it stands for ``vllm serve`` instead: no report header, ``owned_by: vllm`` in ``/v1/models`` and
its load only in the ``vllm:num_requests_running`` / ``vllm:num_requests_waiting`` gauges of ``/metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Gauge, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repo's packages
from services.genrm_server.middleware import LoadReport

STATE: dict[str, Any] = {"delay_s": 0.0, "seen": [], "in_flight": 0, "port": 0, "vllm": False}
app = FastAPI()
registry = CollectorRegistry()
Gauge("vllm:num_requests_running", "Requests being served.", ["model_name"], registry=registry).labels(
    model_name="judge").set_function(lambda: STATE["in_flight"])
Gauge("vllm:num_requests_waiting", "Requests waiting.", ["model_name"], registry=registry).labels(
    model_name="judge").set(0)


class Engine:
    """What ``LoadReport`` reads of an engine: sequences running and waiting."""

    @property
    def num_running(self) -> int:
        return STATE["in_flight"]

    num_waiting = 0


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@app.get("/ready")
async def ready() -> dict:
    return {"status": "ready"}


@app.get("/v1/models")
async def models() -> dict:
    return {"object": "list", "data": [{"id": "judge", "object": "model",
                                        "owned_by": "vllm" if STATE["vllm"] else "genrm"}]}


@app.get("/metrics")
async def metrics() -> Response:
    if not STATE["vllm"]:
        return Response(status_code=404)
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


@app.get("/seen")
async def seen() -> list:
    return STATE["seen"]


@app.post("/control")
async def control(request: Request) -> dict:
    STATE.update(await request.json())
    return {"delay_s": STATE["delay_s"]}


@app.post("/{path:path}")
async def anything(path: str, request: Request) -> JSONResponse:
    body = await request.json()
    STATE["seen"].append(request.headers.get("x-affinity-key"))
    STATE["in_flight"] += 1
    try:
        await asyncio.sleep(float(body.get("sleep_s", STATE["delay_s"])) if isinstance(body, dict) else 0.0)
    finally:
        STATE["in_flight"] -= 1
    return JSONResponse({"worker": STATE["port"]})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--vllm", action="store_true")
    a = p.parse_args()
    STATE["port"], STATE["vllm"] = a.port, a.vllm
    uvicorn.run(app if a.vllm else LoadReport(app, Engine()), host="127.0.0.1", port=a.port, log_level="warning")
