"""A minimal HTTP server of SandboxFusion's /run_code on the bubblewrap sandbox, for tests that drive it with
real clients (verl's sandbox_fusion reward) before the GenRM server mounts the route: ``python THIS PORT``."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.sandbox import Sandbox, SandboxBusy
from services.sandbox.run_code import RunCodeInvalid, run_code
from trainer_client.protocol import RunCodeRequest, RunCodeResponse, error_body

sandbox = Sandbox(workers=4)


@asynccontextmanager
async def lifespan(_: FastAPI):
    await sandbox.check()
    yield
    await sandbox.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/ready")
async def ready() -> dict:
    return {"ready": True}


@app.post("/run_code", response_model=RunCodeResponse)
async def run_code_route(request: RunCodeRequest):
    try:
        return await run_code(sandbox, request)
    except RunCodeInvalid as error:
        return JSONResponse(error_body(400, str(error), param=error.field), status_code=400)
    except SandboxBusy as busy:
        return JSONResponse(error_body(503, str(busy)), status_code=503,
                            headers={"Retry-After": str(int(busy.retry_after_s + 0.999))})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
