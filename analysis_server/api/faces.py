"""``/faces``: stored observations, their images (base or full layer) and their erasure."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from analysis_server import face_images, queries
from analysis_server.api.deps import Caller, ServicesDep
from analysis_server.api.schemas import (
    MAX_MS,
    MAX_OFFSET,
    ErasedOut,
    FaceDetailOut,
    FacePageOut,
    Id,
)
from analysis_server.errors import InvalidInput, NotFound, ServerError
from analysis_server.services import Services
from analysis_server.store import FaceRecord
from facecodec import enhancement
from facecodec.image_codecs import CODECS

router = APIRouter(prefix="/faces", tags=["faces"])

# Every codec an edge may be asked for; the learned ones are experimental (facecodec/learned.py) and asked
# for only by name: no default names them and the dashboard does not offer them.
EnhancementCodec = Literal[tuple(sorted(CODECS))]  # type: ignore[valid-type]


async def get_face(s: Services, face_id: str) -> FaceRecord:
    face = await s.store.get(face_id)
    if face is None:
        raise NotFound(f"no stored face {face_id!r} (unknown, expired or erased)")
    return face


@router.get("", response_model=FacePageOut, summary="List stored faces, newest first",
            responses={404: {"description": "`camera` names a camera that never streamed to this server (a camera "
                                            "whose faces all expired is known: 200 with no items)"},
                       422: {"description": "bad parameters, or a `cursor` this server did not give out"}})
async def list_faces(
    s: ServicesDep,
    camera: Annotated[Id | None, Query(description="only this camera (404 if it never streamed here)")] = None,
    since_ms: Annotated[int | None, Query(ge=0, le=MAX_MS, description="capture time from (Unix ms)")] = None,
    until_ms: Annotated[int | None, Query(ge=0, le=MAX_MS, description="capture time up to (Unix ms)")] = None,
    identity: Annotated[Id | None, Query(description="only faces matched to this identity")] = None,
    matched: Annotated[bool | None, Query(description="true: matched to any identity; false: unmatched")] = None,
    cursor: Annotated[str | None, Query(max_length=400, pattern=r"^[A-Za-z0-9_-]*$",
                                        description="where to go on: a page's `next_cursor`")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="faces to skip (after `cursor`); prefer "
                                                                  "the cursor, which costs nothing to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FacePageOut:
    return await queries.faces_page(s, camera=camera, identity=identity, matched=matched, since_ms=since_ms,
                                    until_ms=until_ms, cursor=cursor or None, offset=offset, limit=limit)


@router.get("/{face_id}", response_model=FaceDetailOut, summary="One stored face (no feature values)",
            responses={404: {"description": "unknown, expired or erased face"}})
async def read_face(face_id: Id, s: ServicesDep) -> FaceDetailOut:
    face = await get_face(s, face_id)
    enh = await s.store.get_enhancement(face_id)
    return queries.face_out(s, face, FaceDetailOut, enhancement_cached=enh is not None,
                    enhancement_layer_bytes=len(enh) if enh is not None else None)


@router.get("/{face_id}/image", summary="The face's image: rebuilt from the base layer, in full fidelity with the "
                                      "enhancement layer, or the frame around the person (PNG)",
            response_class=Response,
            responses={200: {"content": {"image/png": {}},
                             "description": "PNG. Headers: X-Face-Layer, X-Base-Layer-Bytes; full: "
                                            "X-Enhancement-Layer-Bytes, X-Enhancement-Source (cache or edge), "
                                            "X-Enhancement-Codec, X-Enhancement-Quality; context: X-Context-Bytes, "
                                            "X-Context-Codec, X-Context-Quality, X-Face-Box (x,y,w,h of the face in "
                                            "the picture), X-Context-Region (x,y,w,h of the picture in the frame)"},
                       404: {"description": "unknown (expired, erased) face; or the edge does not know it, or kept no "
                                            "context picture of it"},
                       410: {"description": "the edge no longer holds the texture (retention, size cap, erased)"},
                       422: {"description": "bad parameters (purpose=thumbnail with another layer than base)"},
                       501: {"description": "layer=context from an edge that cannot serve it (facewire.v1, or an "
                                            "older v2 agent)"},
                       502: {"description": "the edge's upload failed or does not decode"},
                       503: {"description": "no reconstruction model installed (layer=base), or Redis unreachable"},
                       504: {"description": "the camera is offline or did not answer within the timeout"}})
async def face_image(
    face_id: Id,
    s: ServicesDep,
    caller: Caller,
    layer: Annotated[Literal["base", "full", "context"], Query(
        description="base: from the feature alone; full: with the enhancement layer, fetched from the edge if "
                    "needed; context: the frame around the person, from the edge (never cached)")] = "base",
    codec: Annotated[EnhancementCodec | None, Query(description="layer=full: enhancement codec to ask the edge for "
                                                                "(default: the edge's)")] = None,
    quality: Annotated[int | None, Query(ge=1, le=100, description="layer=full: enhancement codec quality")] = None,
    purpose: Annotated[Literal["view", "thumbnail"], Query(
        description="thumbnail: a small picture in a list (layer=base only), audited as `thumbnail`, apart from "
                    "deliberate views (`image`)")] = "view",
) -> Response:
    status, source, used_codec, used_quality = 500, "", "", 0
    try:
        if purpose == "thumbnail" and layer != "base":
            raise InvalidInput("purpose=thumbnail is for layer=base only: a thumbnail never asks an edge")
        face = await get_face(s, face_id)
        headers = {"X-Face-Layer": layer, "X-Base-Layer-Bytes": str(len(face.base_layer))}
        if layer == "base":
            image = await asyncio.to_thread(face_images.base_image, face.base_layer)
        elif layer == "full":
            enh, source = await s.enhancement_layer(face, codec or "", quality or 0)
            h = enhancement.read_header(enh)
            used_codec, used_quality = h.codec, h.quality
            headers.update({"X-Enhancement-Layer-Bytes": str(len(enh)), "X-Enhancement-Source": source,
                            "X-Enhancement-Codec": h.codec, "X-Enhancement-Quality": str(h.quality)})
            image = await asyncio.to_thread(face_images.full_image, enh, face.base_layer)
        else:
            payload = await s.context_layer(face)
            source = "edge"
            image, h = await asyncio.to_thread(face_images.context_image, payload)
            used_codec, used_quality = h.codec, h.quality
            headers.update({"X-Context-Bytes": str(len(payload)), "X-Context-Codec": h.codec,
                            "X-Context-Quality": str(h.quality), "X-Face-Box": ",".join(map(str, h.face_box)),
                            "X-Context-Region": ",".join(map(str, h.region))})
        body = await asyncio.to_thread(face_images.png, image)
        status = 200
        return Response(body, media_type="image/png", headers=headers)
    except ServerError as e:
        status = e.status
        raise
    finally:
        s.metrics.images.labels(layer, str(status)).inc()
        extra = {"codec": used_codec, "quality": used_quality} if used_codec else {}
        if layer == "full" and not used_codec and (codec or quality):  # what was asked for, when nothing came
            extra = {"codec": codec or "", "quality": quality or 0}
        await s.store.audit(caller, "thumbnail" if purpose == "thumbnail" else "image", face_id=face_id, layer=layer,
                            status=status, source=source, **extra)


@router.delete("/{face_id}", response_model=ErasedOut, summary="Erase a face everywhere (server and edge texture)",
               responses={404: {"description": "unknown, expired or already erased face"}})
async def erase_face(face_id: Id, s: ServicesDep, caller: Caller) -> ErasedOut:
    face = await get_face(s, face_id)
    online = s.link.session(face.camera_id) is not None
    erased = await s.erase_faces([face_id], caller)
    return ErasedOut(erased=erased, texture_drop_sent=online)
