"""The REST API (FastAPI): one router per resource, every route behind an API key except health."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import redis.exceptions as redis
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from analysis_server import dashboard
from analysis_server.api import faces, identities, live_events, matching, system
from analysis_server.api.deps import require_caller
from analysis_server.api.guards import RequestGuard
from analysis_server.auth import FailureLimiter
from analysis_server.errors import ServerError
from analysis_server.services import Services
from analysis_server.settings import ServerSettings

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # form framing around the largest upload


def warm_models(settings: ServerSettings) -> None:
    """Load what the first requests would otherwise wait for: base-layer tables and decoder, the reconstruction net."""
    from facecodec import base_layer, zoo
    from facecodec.errors import FaceCodecError

    for e in zoo.entries(base_layer.KIND):
        try:
            model = base_layer.load_model(e.name)
            model.tables(model.default_step)
            # The ingest decoder (compiled on first use): decode one payload now, not the first batch.
            base_layer.decode_many([base_layer.BaseLayerCodec(model).compress(model.mean.astype("float32"))])
        except FaceCodecError as err:
            log.warning("base-layer model %s cannot be loaded: %s", e.name, err)
    from analysis_server.face_images import reconstruction_installed

    if reconstruction_installed():
        from facecodec import reconstruction

        try:
            reconstruction.load_reconstructor()
        except FaceCodecError as err:
            log.warning("the reconstruction model cannot be loaded: %s", err)
    else:
        log.info("no reconstruction model is installed: layer=base images answer 503")


def create_app(settings: ServerSettings, services: Services) -> FastAPI:
    """The REST app over ``services`` (whose lifetime the caller owns); models load in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(warm_models, settings)
        app.state.models_ready = True
        yield

    app = FastAPI(title="facecodec analysis server", version="1", lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  description="Faces seen by the cameras, matched on decoded base-layer features; "
                              "images rebuilt on demand. Every route except /healthz and /readyz needs an API key "
                              "(and /metrics unless FACESERVER_METRICS_PUBLIC is set).")
    app.state.services = services
    app.state.settings = settings
    app.state.models_ready = False

    @app.exception_handler(ServerError)
    async def server_error(request: Request, exc: ServerError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def store_unreachable(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("%s %s: Redis is unreachable: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "the store (Redis) is unreachable; retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    app.include_router(system.health_router)
    secured = [Depends(require_caller)]
    for r in (faces.router, identities.router, matching.router, system.router, live_events.router):
        app.include_router(r, dependencies=secured)
    app.include_router(system.metrics_router, dependencies=[] if settings.metrics_public else secured)
    dashboard.mount(app)  # its pages check the session themselves (the login form, not a 401 JSON)
    limiter = app.state.auth_limiter = FailureLimiter(settings.auth_fail_limit, settings.auth_fail_window_s,
                                                      settings.auth_lockout_s, settings.auth_fail_delay_s)
    app.add_middleware(RequestGuard, limiter=limiter, max_body=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    return app
