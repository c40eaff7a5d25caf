"""Health, readiness, cameras, statistics, Prometheus metrics, events and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

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
    known = await s.store.cameras()
    online = s.link.online()
    ids = sorted(set(known) | set(online))
    counts = await s.store.camera_counts(ids)
    elsewhere = await s.router.owners(ids)  # streams open on other server replicas
    out = []
    for c in ids:
        info, sess = known.get(c, {}), online.get(c)
        out.append(CameraOut(camera_id=c, online=sess is not None or c in elsewhere,
                             agent_version=(sess.agent_version if sess else None) or info.get("agent_version"),
                             connected_ms=sess.connected_ms if sess else info.get("connected_ms"),
                             last_seen_ms=info.get("last_seen_ms"), faces_stored=counts.get(c, 0)))
    return out


def _counter(metric, **labels) -> float:
    for m in metric.collect():
        for sample in m.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@router.get("/stats", response_model=StatsOut, summary="Counts: faces, identities, cameras, ingest outcomes")
async def stats(s: ServicesDep) -> StatsOut:
    known = await s.store.cameras()
    online = s.link.online()
    obs = {o: _counter(s.metrics.observations, outcome=o) for o in ("stored", "duplicate", "erased", "rejected")}
    stored, matched = await s.store.count_faces()
    return StatsOut(faces_stored=stored, faces_matched=matched,
                    identities=s.gallery.identity_count, gallery_features=len(s.gallery.index),
                    gallery_index=s.gallery.index.kind, cameras_known=len(set(known) | set(online)),
                    cameras_online=len(online), match_threshold=s.settings.match_threshold,
                    retention_s=s.settings.retention_s, observations=obs,
                    watchlist_hits=_counter(s.metrics.watchlist_hits))


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


_AUDIT_INT = ("time_ms", "status", "quality", "features", "faces", "hits")


def audit_out(raw: dict[str, str]) -> AuditEntryOut:
    """An audit-log entry (strings in Redis) typed: numbers as numbers, empty values left out."""
    e = {k: v for k, v in raw.items() if v != "" and k in AuditEntryOut.model_fields}
    if e.get("action") == "enrol" and e.get("source") == "image":  # entries written before `origin`
        e["origin"] = e.pop("source")
    for k in _AUDIT_INT:
        if k in e:
            e[k] = int(e[k])
    return AuditEntryOut(**e)


@router.get("/audit", response_model=list[AuditEntryOut],
            summary="The audit log, newest first (who asked for which image, who erased or enrolled what)")
async def audit(s: ServicesDep, face_id: Annotated[Id | None, Query(description="only entries about this face")] = None,
                count: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditEntryOut]:
    return [audit_out(e) for e in await s.store.audit_entries(count, face_id)]


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())
