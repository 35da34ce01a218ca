"""``GET /openapi.json`` of the router: its own routes plus the API of the workers it proxies.

The workers' part is read from a ready worker's own ``/openapi.json`` (the GenRM server's FastAPI
schema), so it always matches the servers actually behind the router, whatever their version; the
router package needs no FastAPI for it. Added to it: the router's own routes (``/health``, ``/ready``,
``/metrics``, ``/workers``, the admin API; the workers' ``/health``, ``/ready`` and ``/metrics`` are
replaced by the router's), the errors the router itself answers on proxied routes, and Bearer auth
when keys are configured. The merged document is cached for ``ttl_s``; when no worker can give its
schema a stale copy is served, and without any copy the answer is 503 (a schema lacking the workers'
API would be silently incomplete).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp

from trainer_client.protocol import ErrorResponse, error_body

if TYPE_CHECKING:
    from router.app import RouterApp
    from router.proxy.downstream import ClientConnection

log = logging.getLogger("genrm.router")

_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_JSON_OBJECT = {"type": "object", "additionalProperties": True}
_WORKER_REF = {"type": "object", "required": ["url"], "additionalProperties": False,
               "properties": {"url": {"type": "string", "description": "Worker base URL, e.g. http://10.0.0.5:8000"}}}
_WORKERS = {"type": "object", "required": ["policy", "reward_policy", "queue_depth", "workers"], "properties": {
    "policy": {"type": "string"}, "reward_policy": {"type": "string"}, "queue_depth": {"type": "integer"},
    "workers": {"type": "array", "items": _JSON_OBJECT}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ERROR_REF, description)


def _router_paths(keys: bool) -> dict[str, Any]:
    """The routes the router answers itself (``router.app``, ``router.admin``)."""
    auth = {"401": _error("Missing or invalid API key.")} if keys else {}
    admin = {"401": _error("Missing or invalid API key."),
             "403": _error("Not an admin key, or the admin API is off (no admin_api_keys).")}
    body = {"required": True, "content": {"application/json": {"schema": _WORKER_REF}}}
    bad_body = {"400": _error("Malformed JSON body."), "422": _error("Invalid worker URL (param names the field).")}
    return {
        "/health": {"get": {"summary": "The router process is alive", "operationId": "router_health",
                            "security": [], "responses": {"200": _json(
                                {"type": "object", "properties": {"status": {"type": "string"}}}, "Alive.")}}},
        "/ready": {"get": {"summary": "At least one worker is ready", "operationId": "router_ready", "security": [],
                           "responses": {"200": _json({"type": "object", "properties": {
                               "status": {"type": "string"}, "ready_workers": {"type": "integer"}}}, "Ready."),
                               "503": _error("No worker is ready.")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics of the router (genrm_router_*)",
                             "operationId": "router_metrics", "responses": {
                                 "200": {"description": "Prometheus text format.",
                                         "content": {"text/plain": {"schema": {"type": "string"}}}}, **auth}}},
        "/workers": {"get": {"summary": "Every worker's state, in-flight count, breaker and latency",
                             "operationId": "router_workers", "responses": {"200": _json(_WORKERS, "Workers."),
                                                                             **auth}}},
        "/admin/workers": {
            "get": {"summary": "List workers (admin key)", "operationId": "admin_list_workers",
                    "responses": {"200": _json(_WORKERS, "Workers."), **admin}},
            "post": {"summary": "Add a worker, or take back a draining one (admin key)",
                     "operationId": "admin_add_worker", "requestBody": body,
                     "responses": {"201": _json(_JSON_OBJECT, "The worker."), **bad_body, **admin}},
            "delete": {"summary": "Remove a worker (admin key); 409 while it has requests in flight unless force",
                       "operationId": "admin_remove_worker",
                       "parameters": [
                           {"name": "url", "in": "query", "required": True, "schema": {"type": "string"}},
                           {"name": "force", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["true", "false"]}}],
                       "responses": {"200": _json({"type": "object", "properties": {"removed": {"type": "string"}}},
                                                  "Removed."),
                                     "404": _error("No such worker."), "409": _error("Requests in flight."),
                                     **admin}},
        },
        "/admin/workers/drain": {"post": {
            "summary": "Drain a worker: no new requests, in-flight ones finish (admin key)",
            "operationId": "admin_drain_worker", "requestBody": body,
            "responses": {"200": _json(_JSON_OBJECT, "The worker."), "404": _error("No such worker."), **bad_body,
                          **admin}}},
    }


def _error_components() -> dict[str, Any]:
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "ErrorResponse": schema}


def merge(worker_doc: dict[str, Any], *, keys: bool, rate_limited: bool) -> dict[str, Any]:
    """The router's document: ``worker_doc`` (not modified) with the router's routes, errors and auth."""
    doc = copy.deepcopy(worker_doc)
    own = _router_paths(keys)
    # What the router itself may answer on any proxied route (router.app, router.proxy).
    proxied_errors = {"413": _error("Body over the router's max_body_bytes."),
                      "502": _error("No worker could answer (connect error, reset, bad response)."),
                      "503": _error("No worker available, or the wait queue is full or timed out."),
                      "504": _error("The request's deadline passed.")}
    if keys:
        proxied_errors["401"] = _error("Missing or invalid API key.")
    if rate_limited:
        proxied_errors["429"] = _error("Rate limit exceeded (Retry-After).")
    paths = {}
    for path, ops in (doc.get("paths") or {}).items():
        if path in own or not isinstance(ops, dict):
            continue
        for op in ops.values():
            if isinstance(op, dict) and isinstance(op.get("responses"), dict):
                for status, response in proxied_errors.items():
                    if status != "413" or "requestBody" in op:
                        op["responses"].setdefault(status, response)
        paths[path] = ops
    doc["paths"] = {**own, **paths}
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(_error_components())
    if keys:
        components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
        doc["security"] = [{"bearer": []}]
    info = doc.setdefault("info", {})
    worker_title = info.get("title", "GenRM server")
    info["title"] = "genrm-platform router"
    info["description"] = (f"The router's own routes, and the API of its workers ({worker_title}), which it "
                           'proxies. Errors use the envelope {"error": {"message", "type", "param", "code"}}.')
    doc.setdefault("openapi", "3.1.0")
    return doc


class OpenApiDocument:
    """Serves the merged document; fetches a worker's schema at most once per ``ttl_s`` (shared by requests)."""

    def __init__(self, app: RouterApp, ttl_s: float = 60.0):
        self.app, self.ttl_s = app, ttl_s
        self._body: bytes | None = None
        self._expires = 0.0
        self._refresh: asyncio.Task | None = None
        self._answers: set[asyncio.Task] = set()  # strong references until each answer is sent

    def handle(self, client: ClientConnection) -> None:
        loop = self.app.core.loop
        if self._body is not None and loop.time() < self._expires:
            return client.send(200, self._body)
        task = loop.create_task(self._answer(client))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, client: ClientConnection) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = self.app.core.loop.create_task(self._fetch())
        try:
            body = await asyncio.shield(self._refresh)
        except Exception:  # a bug here must still answer the client
            log.exception("router: building /openapi.json failed")
            body = None
        body = body or self._body  # a stale copy beats none when no worker answers now
        if body is None:
            return client.send_json(503, error_body(503, "no worker is ready to give its API schema; the router's "
                                                         "/openapi.json includes the workers' API"),
                                    [(b"retry-after", b"1")])
        client.send(200, body)

    async def _fetch(self) -> bytes | None:
        s = self.app.settings
        workers = [w for w in self.app.core.pool.workers if w.ready and not w.draining]
        for worker in workers:
            try:
                async with self.app.client.get(worker.url + "/openapi.json",
                                               timeout=aiohttp.ClientTimeout(total=s.health_timeout_s)) as resp:
                    doc = await resp.json(content_type=None) if resp.status == 200 else None
            except (asyncio.TimeoutError, aiohttp.ClientError, ValueError) as exc:
                log.warning("router: could not read %s/openapi.json: %r", worker.url, exc)
                continue
            if isinstance(doc, dict) and isinstance(doc.get("paths"), dict):
                merged = merge(doc, keys=self.app.keys.enabled, rate_limited=self.app.limiter.enabled)
                self._body = json.dumps(merged).encode()
                self._expires = self.app.core.loop.time() + self.ttl_s
                return self._body
            log.warning("router: %s/openapi.json is not an OpenAPI document", worker.url)
        return None
