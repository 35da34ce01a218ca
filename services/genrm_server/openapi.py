"""The server's OpenAPI document as the server answers: its errors are 400s in OpenAI's envelope.

FastAPI documents a 422 with its own ``HTTPValidationError`` on every route with a body, but the server
answers a bad body with 400 and ``{"error": {"message", "type", "param", "code"}}`` (``errors.py``); a
client generated from the schema would otherwise expect a shape that never comes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from trainer_client.protocol import ErrorResponse

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def install(app: FastAPI, *, api_keys: bool) -> None:
    """Wrap ``app.openapi``: FastAPI's document, once, with the errors the server really gives."""
    fastapi_doc = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_server_errors(fastapi_doc(), api_keys=api_keys)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_server_errors(doc: dict[str, Any], *, api_keys: bool) -> dict[str, Any]:
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if "requestBody" in op:
                responses["400"] = {"description": "Invalid body: the message and `param` name the field.", **_ERROR}
                responses["413"] = {"description": "Body over max_body_bytes.", **_ERROR}
            if api_keys and path not in ("/health", "/ready"):
                responses["401"] = {"description": "Missing or invalid API key (Authorization: Bearer).", **_ERROR}
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorResponse"] = error
    return doc
