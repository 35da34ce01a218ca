"""The GenRM server: one FastAPI app per replica, one engine per app.

Routes: the OpenAI API (``openai_api``), ``/health`` (process alive), ``/ready`` (engine serving, not shutting down),
``/metrics`` (Prometheus). Every error, including validation and unknown routes, uses OpenAI's error
envelope with a message that names the offending field.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from services.genrm_server import code_api, openai_api, reward_api
from services.genrm_server import openapi as openapi_doc
from services.genrm_server.engines import Engine, create_engine
from services.genrm_server.errors import install_error_handlers
from services.genrm_server.metrics import SandboxMetrics, ServerMetrics
from services.genrm_server.middleware import ApiKeys, BodySizeLimit, LoadReport, RequestMetrics
from services.genrm_server.model_marker import marker_warning
from services.genrm_server.reward_service import RewardService
from services.genrm_server.settings import ServerSettings
from trainer_client.protocol import error_body

log = logging.getLogger("genrm.server")

ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics", "/v1/reward",
          "/v1/reward/batch", "/v1/recipes", "/get_reward", "/slime/reward", "/run_code"}


def create_app(settings: ServerSettings, engine: Engine | None = None) -> FastAPI:
    engine = engine or create_engine(settings)
    metrics = ServerMetrics(engine)
    sandbox_metrics: SandboxMetrics | None = None
    sandbox = code_api.create_sandbox(settings, on_run=lambda run: sandbox_metrics and sandbox_metrics.on_run(run))
    if sandbox is not None:
        sandbox_metrics = SandboxMetrics(metrics.registry, sandbox)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warning := marker_warning(settings.model):
            log.warning("%s", warning)
        if sandbox is not None:
            await code_api.start(sandbox, settings.sandbox_isolation)  # no working sandbox: refuse to start
        await engine.start()
        # The model, torch and transformers are a million long-lived objects: keep every full collection
        # (triggered by request garbage, e.g. a batch's thousands of samples) from walking them again.
        gc.freeze()
        what = (f"model '{engine.model_name}' with the {settings.engine} engine" if engine.serves_model
                else "no model (a sandbox server)")
        log.info("serving %s%s", what, f" on {app.state.url}" if getattr(app.state, "url", None) else "")
        try:
            yield
        finally:
            app.state.rewards.close()
            await engine.stop()
            if sandbox is not None:
                await sandbox.aclose()

    app = FastAPI(title="genrm-platform GenRM server", version="0.1.0", lifespan=lifespan)
    app.state.engine, app.state.metrics, app.state.settings = engine, metrics, settings
    app.state.sandbox, app.state.sandbox_metrics = sandbox, sandbox_metrics
    app.state.rewards = RewardService(settings, engine, metrics.rewards, sandbox)
    app.state.draining = False  # set on a stop signal: /ready answers 503 while the requests in flight finish

    def begin_draining() -> None:
        app.state.draining = True

    app.state.begin_draining = begin_draining
    app.include_router(openai_api.router)
    app.include_router(reward_api.router)
    if sandbox is not None:
        app.include_router(code_api.router)
    install_error_handlers(app)
    openapi_doc.install(app, api_keys=bool(settings.api_keys))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        if app.state.draining:
            return JSONResponse(error_body(503, "shutting down: finishing the requests in flight"), status_code=503)
        if await engine.check_ready():
            return JSONResponse({"status": "ready", "model": engine.model_name})
        return JSONResponse(error_body(503, "engine not ready"), status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(reward_api.BatchRoute, service=app.state.rewards)  # innermost: after the limit, metrics
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.api_keys:  # outside the body limit: an unauthenticated body is never read
        app.add_middleware(ApiKeys, keys=settings.api_keys)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=ROUTES)
    app.add_middleware(LoadReport, engine=engine)  # outermost: every answer says how busy the server is
    return app
