"""The REST API (FastAPI): one router per resource, every route behind an API key except health."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import redis.exceptions as redis
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from analysis_server import dashboard
from analysis_server.api import faces, identities, live_events, matching, system, watchlist
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


OPEN_PATHS = {"/healthz", "/readyz"}
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
# Statuses any route may answer besides its own, written into the OpenAPI document by document_statuses.
AUTH_STATUSES = {
    401: "no valid credentials: send X-API-Key: <key> or Authorization: Bearer <key> (or the dashboard's session "
         "cookie)",
    403: "a dashboard-cookie request from another origin (Sec-Fetch-Site), or one that changes something "
         "without the session's X-CSRF-Token",
    429: "a wrong key from a client past FACESERVER_AUTH_FAIL_LIMIT failures (Retry-After says for how long)",
}
BODY_STATUSES = {413: "the body is larger than FACESERVER_MAX_UPLOAD_BYTES",
                 415: "the body is not JSON, a multipart form or a URL-encoded form"}
STORE_STATUS = {503: "the store (Redis) is unreachable (Retry-After: 5)"}
PATH_STATUS = {404: "no such resource (unknown, expired or erased)"}


def document_statuses(app: FastAPI, metrics_public: bool) -> None:
    """Every route's OpenAPI entry lists every status it can answer: its own (declared on the route), the
    credential checks' (every route but /healthz and /readyz), the request guard's (routes with a body),
    Redis being unreachable (every route but /healthz), and 404 for a path naming a resource."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["ErrorOut"] = {
            "title": "ErrorOut", "type": "object", "required": ["detail"],
            "properties": {"detail": {"title": "Detail", "type": "string", "description": "what went wrong"}}}
        for path, operations in schema["paths"].items():
            for op in operations.values():
                responses = op.setdefault("responses", {})
                extra: dict[int, str] = {}
                if path not in OPEN_PATHS and not (path == "/metrics" and metrics_public):
                    extra |= AUTH_STATUSES
                if "requestBody" in op:
                    extra |= BODY_STATUSES
                if path != "/healthz":
                    extra |= STORE_STATUS
                if "{" in path:
                    extra |= PATH_STATUS
                for code, text in extra.items():
                    responses.setdefault(str(code), {"description": text, "content": _ERROR})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


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
    for r in (faces.router, identities.router, matching.router, watchlist.router, system.router, live_events.router):
        app.include_router(r, dependencies=secured)
    app.include_router(system.metrics_router, dependencies=[] if settings.metrics_public else secured)
    dashboard.mount(app)  # its pages check the session themselves (the login form, not a 401 JSON)
    document_statuses(app, settings.metrics_public)
    limiter = app.state.auth_limiter = FailureLimiter(settings.auth_fail_limit, settings.auth_fail_window_s,
                                                      settings.auth_lockout_s, settings.auth_fail_delay_s)
    app.add_middleware(RequestGuard, limiter=limiter, max_body=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    return app
