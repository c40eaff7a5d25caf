"""Health, readiness, cameras, statistics, Prometheus metrics, events and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from analysis_server import queries
from analysis_server.api.deps import ServicesDep
from analysis_server.api.schemas import AuditEntryOut, CameraOut, EventOut, Id, StatsOut, StreamId

health_router = APIRouter(tags=["health"])
router = APIRouter(tags=["system"])


@health_router.get("/healthz", summary="Liveness (no credentials needed)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health_router.get("/readyz", summary="Readiness: Redis answers, models loaded, gRPC serving (no credentials needed)",
                   responses={503: {"description": "not ready (the body names what is missing)"}})
async def readyz(request: Request, s: ServicesDep) -> JSONResponse:
    problems = []
    try:
        await s.redis.ping()
    except Exception as e:  # any failure means "not ready"; the reason is reported
        problems.append(f"redis: {type(e).__name__}")
    if not getattr(request.app.state, "models_ready", False):
        problems.append("models: loading")
    if not s.grpc_serving:
        problems.append("grpc: not serving")
    warnings = s.warnings()  # it runs, but an operator should fix these
    if problems:
        return JSONResponse({"status": "not ready", "problems": problems, "warnings": warnings}, status_code=503)
    return JSONResponse({"status": "ready", "warnings": warnings})


@router.get("/cameras", response_model=list[CameraOut],
            summary="Known cameras and whether their stream is open (on this server replica or another)")
async def cameras(s: ServicesDep) -> list[CameraOut]:
    return await queries.cameras(s)


@router.get("/stats", response_model=StatsOut, summary="Counts: faces, identities, cameras, ingest outcomes")
async def stats(s: ServicesDep) -> StatsOut:
    return await queries.stats(s)


metrics_router = APIRouter(tags=["system"])  # behind a key unless FACESERVER_METRICS_PUBLIC


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(s: ServicesDep) -> Response:
    return Response(s.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/events", response_model=list[EventOut],
            summary="Recent events (observations, watchlist hits and acknowledgements, identity changes, deletions), "
                    "oldest first")
async def events(s: ServicesDep, after: Annotated[StreamId, Query(pattern=r"^\d+-\d+$", description="only events "
                                                                   "after this id (else the newest `count`)")] = None,
                 count: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[EventOut]:
    return [EventOut(**s.live.enrich(i, f)) for i, f in await s.store.events(count, after)]


@router.get("/audit", response_model=list[AuditEntryOut],
            summary="The audit log, newest first (who asked for which image, who erased or enrolled what)")
async def audit(s: ServicesDep, face_id: Annotated[Id | None, Query(description="only entries about this face")] = None,
                count: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditEntryOut]:
    return await queries.audit(s, count, face_id)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())
