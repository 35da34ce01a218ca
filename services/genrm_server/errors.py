"""Error handling of the GenRM server: every error, validation and unknown routes included, uses OpenAI's
envelope with a message that names the offending field."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.genrm_server.engines import EngineError
from services.genrm_server.recipes import RecipeInputError
from trainer_client.protocol import error_body

log = logging.getLogger("genrm.server")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_errors(exc.errors())
        return JSONResponse(error_body(400, message, param=param), status_code=400)

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, param=exc.param), status_code=exc.status)

    @app.exception_handler(RecipeInputError)
    async def recipe_error(_: Request, exc: RecipeInputError) -> JSONResponse:
        status = 404 if exc.param == "recipe" else 400
        return JSONResponse(error_body(status, exc.message, param=exc.param), status_code=status)

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
