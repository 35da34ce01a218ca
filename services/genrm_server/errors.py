"""Error handling of the GenRM server: every error, validation and unknown routes included, uses OpenAI's
envelope with a message that names the offending field."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.genrm_server.engines import EngineError
from services.genrm_server.recipes import RecipeInputError, UnknownRecipe
from services.sandbox.pool import UnsupportedLanguage
from services.sandbox.session import SandboxBusy, SandboxFailure
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
    if isinstance(exc, SandboxBusy):
        return 503, f"every sandbox worker is busy and the queue is full: {exc}", None
    if isinstance(exc, SandboxFailure):  # the sandbox itself, never the program: an error, not a score
        return 503, f"sandbox failure: {exc}", None
    if isinstance(exc, UnsupportedLanguage):
        return 400, str(exc), "extra_info.language"
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
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status, message, param = describe_error(exc)
        if isinstance(exc, RequestValidationError) and param == "body" and not _is_json(request):
            # FastAPI reads a body as JSON only when it says so: plain `curl -d` sends a form.
            sent = request.headers.get("content-type") or "none"
            message = f"the body must be JSON sent with content-type: application/json (got content-type: {sent})"
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))} if isinstance(exc, SandboxBusy) else None
        return JSONResponse(error_body(status, message, param=param), status_code=status, headers=headers)

    # ValidationError: a body a handler validates itself (the batch route); without its own handler it would
    # reach the catch-all, which Starlette re-raises after answering (a traceback per bad request).
    for kind in (RequestValidationError, ValidationError, RecipeInputError, EngineError, SandboxBusy,
                 SandboxFailure, UnsupportedLanguage, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def describe_validation_errors(errors: Any) -> tuple[str, str | None]:
    """One message naming every bad field (``max_tokens: ...; messages.0.role: ...``) and the first.

    A union's members each report their own error under a tag (``ground_truth.str``, ``...int``): the tags
    are dropped and the members' messages joined, so the field is named as the client sent it."""
    by_field: dict[str, list[str]] = {}
    for err in errors:
        if err.get("type") == "json_invalid":
            by_field.setdefault("body", []).append(
                f"malformed JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}")
            continue
        loc = [str(x) for x in err.get("loc", ()) if x != "body" and not _is_union_tag(x)]
        messages = by_field.setdefault(".".join(loc) or "body", [])
        if err.get("msg") not in messages:
            messages.append(err.get("msg"))
    parts = [text if field == "body" and text.startswith("malformed") else f"{field}: {text}"
             for field, text in ((f, _either(m)) for f, m in by_field.items())]
    return "; ".join(parts) or "invalid request", next(iter(by_field), None)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "bytes"})


def _is_union_tag(part: Any) -> bool:
    """pydantic's label for a union member (``str``, ``dict[str,any]``, ``function-after[...]``)."""
    return isinstance(part, str) and (part in _TYPE_TAGS or any(c in part for c in "[]()"))


def _either(messages: list[str]) -> str:
    """``Input should be a valid string, a valid integer or a valid number`` from the members' messages."""
    prefix = "Input should be "
    if len(messages) > 1 and all(m.startswith(prefix) for m in messages):
        rest = [m[len(prefix):] for m in messages]
        return prefix + ", ".join(rest[:-1]) + " or " + rest[-1]
    return "; ".join(messages)
