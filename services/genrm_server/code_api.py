"""The code sandbox on the server: built from the settings, checked at start-up, and SandboxFusion's
``POST /run_code`` (verl's ``reward.sandbox_fusion.url`` points here, or at the router).

``--code-sandbox bwrap`` starts nothing it has not checked: without a working sandbox the server refuses to
start. ``none`` runs programs unsandboxed (trusted code only), logged loudly and shown in ``/v1/recipes``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.genrm_server.settings import ServerSettings
from services.sandbox.run_code import RunCodeInvalid, RunCodeMaxima, run_code
from services.sandbox.session import Limits, SandboxBusy
from trainer_client.protocol import RunCodeRequest, RunCodeResponse, error_body

log = logging.getLogger("genrm.sandbox")
router = APIRouter()


def create_sandbox(settings: ServerSettings, on_run: Any = None) -> Any:
    """The server's SessionFactory for ``settings.sandbox_isolation``, or None when code is off."""
    isolation = settings.sandbox_isolation
    if isolation == "off":
        return None
    workers = settings.sandbox_workers or None
    if isolation == "none":
        from services.sandbox.local import LocalSessions

        return LocalSessions(workers, settings.sandbox_queue_size, on_run=on_run)
    from services.sandbox.pool import Sandbox
    from services.sandbox.spread import Spread

    return Spread(Sandbox(workers, settings.sandbox_queue_size, limits=code_limits(settings), on_run=on_run))


def code_limits(settings: ServerSettings) -> Limits:
    return Limits(wall_s=settings.code_run_timeout_s, memory_mb=settings.code_memory_limit_mb,
                  compile_s=settings.code_compile_timeout_s)


async def start(sandbox: Any, isolation: str) -> None:
    """Check the sandbox really runs a program; SandboxFailure stops the server with the reason."""
    info = await sandbox.check()
    if isolation == "none":
        log.warning("CODE RUNS UNSANDBOXED (--code-sandbox none): programs see this host's files, network and "
                    "environment; for trusted code only. %s", info)
    else:
        log.info("code sandbox ready: %s", info)


def retry_after(busy: SandboxBusy) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(busy.retry_after_s)))}


@router.post("/run_code", response_model=RunCodeResponse)
async def run_code_route(body: RunCodeRequest, request: Request) -> Any:
    """Run one program on one stdin as SandboxFusion does (verl's ``sandbox_fusion`` reward calls this once per
    test). A refused request is a 400 naming the field; every worker busy and the queue full, a 503 with
    ``Retry-After``; a failure of the sandbox itself is the response's ``SandboxError``."""
    state = request.app.state
    settings: ServerSettings = state.settings
    maxima = RunCodeMaxima(run_timeout_s=settings.code_max_run_timeout_s,
                           compile_timeout_s=max(settings.code_max_run_timeout_s, settings.code_compile_timeout_s),
                           memory_mb=settings.code_max_memory_limit_mb, code_bytes=settings.code_max_program_bytes)
    try:
        response = await run_code(state.sandbox, body, defaults=code_limits(settings), maxima=maxima)
    except RunCodeInvalid as error:
        return JSONResponse(error_body(400, str(error), param=error.field), status_code=400)
    except SandboxBusy as busy:
        state.sandbox_metrics.rejected.inc()
        return JSONResponse(error_body(503, f"every sandbox worker is busy and the queue is full: {busy}"),
                            status_code=503, headers=retry_after(busy))
    if response.status == "SandboxError":
        state.metrics.rewards.sandbox_failures.inc()
    return response
