"""The GenRM server: one FastAPI app per replica, one engine per app.

Routes: the OpenAI API (``openai_api``), ``/health`` (process alive), ``/ready`` (engine serving),
``/metrics`` (Prometheus). Every error, including validation and unknown routes, uses OpenAI's error
envelope with a message that names the offending field.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.genrm_server import openai_api
from services.genrm_server.engines import Engine, EngineError, create_engine
from services.genrm_server.metrics import ServerMetrics
from services.genrm_server.middleware import BodySizeLimit, RequestMetrics
from services.genrm_server.settings import ServerSettings
from services.tiny_model import WARNING as TINY_WARNING
from services.tiny_model import is_tiny_model
from trainer_client.protocol import error_body

log = logging.getLogger("genrm.server")

ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics"}


def create_app(settings: ServerSettings, engine: Engine | None = None) -> FastAPI:
    engine = engine or create_engine(settings)
    metrics = ServerMetrics(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if is_tiny_model(settings.model):
            log.warning("%s", TINY_WARNING)
        await engine.start()
        log.info("serving model '%s' with the %s engine", engine.model_name, settings.engine)
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="genrm-platform GenRM server", version="0.1.0", lifespan=lifespan)
    app.state.engine, app.state.metrics, app.state.settings = engine, metrics, settings
    app.include_router(openai_api.router)
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        probe = getattr(engine, "refresh", None)
        if not engine.ready and probe is not None:
            await probe()  # the openai engine re-checks its upstream
        if engine.ready:
            return JSONResponse({"status": "ready", "model": engine.model_name})
        return JSONResponse(error_body(503, "engine not ready"), status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=ROUTES)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_errors(exc.errors())
        return JSONResponse(error_body(400, message, param=param), status_code=400)

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, param=exc.param), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}: {exc}"), status_code=500)


def describe_validation_errors(errors: Any) -> tuple[str, str | None]:
    """One message naming every bad field (``max_tokens: ...; messages.0.role: ...``) and the first."""
    parts, first = [], None
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            parts.append(f"malformed JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}")
            first = first or "body"
            continue
        field = ".".join(loc) or "body"
        first = first or field
        parts.append(f"{field}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request", first
