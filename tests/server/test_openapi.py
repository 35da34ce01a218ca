"""services/genrm_server/openapi.py: the schema documents the errors the server really gives (400/413 in the
envelope, no FastAPI 422)."""

from __future__ import annotations

import httpx


def test_the_schema_documents_the_errors_the_server_gives(server):
    """FastAPI's default 422 + HTTPValidationError is not what the server answers: the schema says 400 (and
    413) in the error envelope, and a bad body's real answer matches that schema's shape."""
    doc = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (method, path)
            if "requestBody" in op:
                for status in ("400", "413"):
                    schema = op["responses"][status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
    envelope = doc["components"]["schemas"]["ErrorResponse"]
    resp = httpx.post(server.url + "/v1/reward", json={"ground_truth": "4"}, timeout=10)
    assert resp.status_code == 400 and set(resp.json()) == set(envelope["properties"]) == {"error"}
