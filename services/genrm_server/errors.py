"""Error handling of the GenRM server: every error, validation and unknown routes included, uses OpenAI's
envelope with a message that names the offending field."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.genrm_server.engines import EngineError
from services.genrm_server.recipes import RecipeInputError, UnknownRecipe
from trainer_client.protocol import error_body

log = logging.getLogger("genrm.server")


def describe_error(exc: Exception) -> tuple[int, str, str | None]:
    """``(status, message, param)`` for any error a request or a batch item can meet: the one mapping used by
    the HTTP handlers and by item-level batch errors, so both always agree."""
    if isinstance(exc, (RequestValidationError, ValidationError)):
        message, param = describe_validation_errors(exc.errors())
        return 400, message, param
    if isinstance(exc, RecipeInputError):
        return (404 if isinstance(exc, UnknownRecipe) else 400), exc.message, exc.param
    if isinstance(exc, EngineError):
        return exc.status, exc.message, exc.param
    if isinstance(exc, StarletteHTTPException):
        cause = exc.__cause__
        if exc.status_code == 400 and cause is not None and not isinstance(cause, StarletteHTTPException):
            # FastAPI's json.loads failed on something other than syntax ("There was an error parsing the
            # body", no field): JSON nested too deeply (RecursionError), bytes that are not UTF-8, an integer
            # of over 4300 digits. Say which, and that it is the body.
            why = "nested too deeply" if isinstance(cause, RecursionError) else str(cause) or type(cause).__name__
            return 400, f"malformed JSON body: {why}", "body"
        return exc.status_code, str(exc.detail), None
    log.error("unhandled error", exc_info=exc)
    return 500, f"internal error: {type(exc).__name__}: {exc}", None


def install_error_handlers(app: FastAPI) -> None:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        status, message, param = describe_error(exc)
        return JSONResponse(error_body(status, message, param=param), status_code=status)

    # ValidationError: a body a handler validates itself (the batch route); without its own handler it would
    # reach the catch-all, which Starlette re-raises after answering (a traceback per bad request).
    for kind in (RequestValidationError, ValidationError, RecipeInputError, EngineError, StarletteHTTPException,
                 Exception):
        app.add_exception_handler(kind, handle)


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
