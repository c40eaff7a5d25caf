"""``/faces``: stored observations, their images (base or full layer) and their erasure."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from analysis_server import face_images
from analysis_server.api.deps import Caller, ServicesDep
from analysis_server.api.schemas import (
    MAX_MS,
    MAX_OFFSET,
    BoxOut,
    ErasedOut,
    FaceDetailOut,
    FaceOut,
    FacePageOut,
    Id,
    MatchOut,
    QualityOut,
)
from analysis_server.errors import NotFound, ServerError
from analysis_server.services import Services
from analysis_server.store import FaceRecord
from facecodec.image_codecs import CODECS

router = APIRouter(prefix="/faces", tags=["faces"])

EnhancementCodec = Literal[tuple(sorted(CODECS))]  # type: ignore[valid-type]
SCAN_CHUNK = 500


def face_out(s: Services, f: FaceRecord, cls=FaceOut, **extra) -> FaceOut:
    match = MatchOut(identity_id=f.identity_id, name=s.gallery.name(f.identity_id), distance=f.distance) \
        if f.identity_id else None
    return cls(face_id=f.face_id, camera_id=f.camera_id, capture_time_ms=f.capture_time_ms, received_ms=f.received_ms,
               expires_ms=f.capture_time_ms + s.settings.retention_s * 1000,
               box=BoxOut(x1=f.box[0], y1=f.box[1], x2=f.box[2], y2=f.box[3]),
               quality=QualityOut(probability=f.probability, face_size=f.face_size, fallback=f.fallback),
               track_id=f.track_id, feature_backend=f.backend, base_layer_model=f.model, step_index=f.step_index,
               base_layer_bytes=len(f.base_layer), match=match, **extra)


async def get_face(s: Services, face_id: str) -> FaceRecord:
    face = await s.store.get(face_id)
    if face is None:
        raise NotFound(f"no stored face {face_id!r} (unknown, expired or erased)")
    return face


@router.get("", response_model=FacePageOut, summary="List stored faces, newest first")
async def list_faces(
    s: ServicesDep,
    camera: Annotated[Id | None, Query(description="only this camera")] = None,
    since_ms: Annotated[int | None, Query(ge=0, le=MAX_MS, description="capture time from (Unix ms)")] = None,
    until_ms: Annotated[int | None, Query(ge=0, le=MAX_MS, description="capture time up to (Unix ms)")] = None,
    identity: Annotated[Id | None, Query(description="only faces matched to this identity")] = None,
    matched: Annotated[bool | None, Query(description="true: matched to any identity; false: unmatched")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FacePageOut:
    key = s.store.index_key(camera, identity, matched)
    items: list[FaceOut] = []
    pos = offset
    # A filter the index cannot answer (matched=false, camera with identity) may have to skip many
    # entries: one request scans at most scan_max of them for at most scan_time_s (one chunk at
    # least, so paging always moves on), then answers what it found with next_offset where it
    # stopped and truncated=true.
    budget, deadline = s.settings.scan_max, time.monotonic() + s.settings.scan_time_s
    while len(items) < limit:
        if pos - offset >= budget or (pos > offset and time.monotonic() > deadline):
            more = bool(await s.store.scan_ids(key, since_ms, until_ms, pos, 1))
            return FacePageOut(items=items, next_offset=pos if more else None, truncated=more)
        ids = await s.store.scan_ids(key, since_ms, until_ms, pos, min(SCAN_CHUNK, budget - (pos - offset)))
        if not ids:
            return FacePageOut(items=items, next_offset=None)
        for f_id, rec in zip(ids, await s.store.get_many(ids)):
            pos += 1
            if rec is None or (camera and rec.camera_id != camera) or (matched is False and rec.identity_id) \
                    or (identity and rec.identity_id != identity):
                continue
            items.append(face_out(s, rec))
            if len(items) == limit:
                break
    more = bool(await s.store.scan_ids(key, since_ms, until_ms, pos, 1))
    return FacePageOut(items=items, next_offset=pos if more else None)


@router.get("/{face_id}", response_model=FaceDetailOut, summary="One stored face (no feature values)")
async def read_face(face_id: Id, s: ServicesDep) -> FaceDetailOut:
    face = await get_face(s, face_id)
    enh = await s.store.get_enhancement(face_id)
    return face_out(s, face, FaceDetailOut, enhancement_cached=enh is not None,
                    enhancement_layer_bytes=len(enh) if enh is not None else None)


@router.get("/{face_id}/image", summary="The face's image, rebuilt from the base layer or both layers (PNG)",
            response_class=Response, responses={200: {"content": {"image/png": {}}},
                                                404: {"description": "unknown face"},
                                                502: {"description": "the edge's upload failed or does not decode"},
                                                410: {"description": "the edge no longer holds the texture"},
                                                503: {"description": "no reconstruction model installed"},
                                                504: {"description": "the camera is offline or did not answer"}})
async def face_image(
    face_id: Id,
    s: ServicesDep,
    caller: Caller,
    layer: Annotated[Literal["base", "full"], Query(description="base: from the feature alone; full: with the "
                                                                "enhancement layer, fetched from the edge if needed")] = "base",
    codec: Annotated[EnhancementCodec | None, Query(description="enhancement codec to ask the edge for")] = None,
    quality: Annotated[int | None, Query(ge=1, le=100, description="enhancement codec quality")] = None,
) -> Response:
    status, source = 500, ""
    try:
        face = await get_face(s, face_id)
        headers = {"X-Face-Layer": layer, "X-Base-Layer-Bytes": str(len(face.base_layer))}
        if layer == "base":
            image = await asyncio.to_thread(face_images.base_image, face.base_layer)
        else:
            enh, source = await s.enhancement_layer(face, codec or "", quality or 0)
            headers["X-Enhancement-Layer-Bytes"] = str(len(enh))
            headers["X-Enhancement-Source"] = source
            image = await asyncio.to_thread(face_images.full_image, enh, face.base_layer)
        body = await asyncio.to_thread(face_images.png, image)
        status = 200
        return Response(body, media_type="image/png", headers=headers)
    except ServerError as e:
        status = e.status
        raise
    finally:
        s.metrics.images.labels(layer, str(status)).inc()
        await s.store.audit(caller, "image", face_id=face_id, layer=layer, status=status, source=source)


@router.delete("/{face_id}", response_model=ErasedOut, summary="Erase a face everywhere (server and edge texture)")
async def erase_face(face_id: Id, s: ServicesDep, caller: Caller) -> ErasedOut:
    face = await get_face(s, face_id)
    online = s.link.session(face.camera_id) is not None
    erased = await s.erase_faces([face_id], caller)
    return ErasedOut(erased=erased, texture_drop_sent=online)
