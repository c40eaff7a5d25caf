"""``/identities``: the gallery of enrolled people (create, read, update, delete, enrol features)."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from typing import Annotated

from fastapi import APIRouter, Query, Request, UploadFile

from analysis_server import queries
from analysis_server.api.deps import Caller, ServicesDep
from analysis_server.api.schemas import (
    MAX_OFFSET,
    EnrolledOut,
    FeatureSource,
    Id,
    IdentityCreate,
    IdentityErasedOut,
    IdentityOut,
    IdentityPageOut,
    IdentityUpdate,
    QualityOut,
)
from analysis_server.errors import InvalidInput, PayloadTooLarge
from analysis_server.gallery import Identity
from analysis_server.services import Services
from facecodec.errors import ImageError, NoFaceError

router = APIRouter(prefix="/identities", tags=["identities"])
log = logging.getLogger(__name__)
MIN_FACE_SIDE = 20  # MTCNN's smallest face; a smaller image fails inside the detector
_frontend_lock = threading.Lock()


def identity_out(i: Identity) -> IdentityOut:
    return IdentityOut(identity_id=i.identity_id, name=i.name, watchlist=i.watchlist, notes=i.notes,
                       created_ms=i.created_ms, updated_ms=i.updated_ms, feature_ids=i.feature_ids)


async def match_enrolled_face(s: Services, face_id: str | None, identity_id: str) -> None:
    """A stored face enrolled into an identity is that identity's: its record, the identity's faces and
    the live view say so at once (``face_matched``), as if it had matched at ingest (distance 0: its own
    feature is now enrolled)."""
    if not face_id:
        return
    face = await s.store.assign_match(face_id, identity_id, 0.0)
    if face is not None:
        await s.store.event("face_matched", face_id=face_id, camera_id=face.camera_id,
                            capture_time_ms=str(face.capture_time_ms), identity_id=identity_id, distance="0.0")


@router.post("", response_model=IdentityOut, status_code=201, summary="Create an identity (optionally with features)",
             responses={404: {"description": "a feature's face_id names no stored face"},
                        422: {"description": "a feature or base layer is not usable"}})
async def create_identity(body: IdentityCreate, s: ServicesDep, caller: Caller) -> IdentityOut:
    feats = [await queries.source_feature(s, f) for f in body.features]  # all checked before anything is written
    ident = await s.gallery.create(body.name, body.watchlist, body.notes)
    for f in feats:
        await s.gallery.add_feature(ident.identity_id, f)
    faces = [f.face_id for f in body.features if f.face_id]
    await s.store.audit(caller, "create_identity", identity_id=ident.identity_id, features=len(feats),
                        face_id=faces[0] if len(faces) == 1 else "")
    for face_id in dict.fromkeys(faces):
        await match_enrolled_face(s, face_id, ident.identity_id)
    await s.store.event("identity_updated", identity_id=ident.identity_id)
    return identity_out(await s.gallery.get(ident.identity_id))


@router.get("", response_model=IdentityPageOut, summary="List identities, oldest first")
async def list_identities(s: ServicesDep, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> IdentityPageOut:
    items, total = await s.gallery.list(offset, limit)
    return IdentityPageOut(items=[identity_out(i) for i in items], total=total)


@router.get("/{identity_id}", response_model=IdentityOut, summary="One identity")
async def read_identity(identity_id: Id, s: ServicesDep) -> IdentityOut:
    return identity_out(await s.gallery.get(identity_id))


@router.patch("/{identity_id}", response_model=IdentityOut, summary="Rename, (un)watchlist, annotate")
async def update_identity(identity_id: Id, body: IdentityUpdate, s: ServicesDep, caller: Caller) -> IdentityOut:
    ident = await s.gallery.update(identity_id, body.name, body.watchlist, body.notes)
    if body.name is not None or body.notes is not None:
        s.compactor.erased()  # the old name and notes leave Redis's files too
    await s.store.audit(caller, "update_identity", identity_id=identity_id)
    await s.store.event("identity_updated", identity_id=identity_id)  # live views show the new name at once
    return identity_out(ident)


@router.delete("/{identity_id}", response_model=IdentityErasedOut,
               summary="Erase an identity, its features and every face matched to it (edge textures too)")
async def delete_identity(identity_id: Id, s: ServicesDep, caller: Caller) -> IdentityErasedOut:
    await s.gallery.delete(identity_id)
    faces = await s.store.identity_face_ids(identity_id)
    erased = await s.erase_faces(faces, caller)
    await s.store.drop_identity_index(identity_id)
    await s.store.audit(caller, "erase_identity", identity_id=identity_id, faces=len(erased))
    await s.store.event("identity_deleted", identity_id=identity_id)
    return IdentityErasedOut(identity_id=identity_id, faces_erased=erased)


@router.post("/{identity_id}/features", response_model=EnrolledOut, status_code=201,
             summary="Enrol a feature: given, from a base layer, or from a stored face")
async def enrol_feature(identity_id: Id, body: FeatureSource, s: ServicesDep, caller: Caller) -> EnrolledOut:
    await s.gallery.get(identity_id)
    feature = await queries.source_feature(s, body)
    fid = await s.gallery.add_feature(identity_id, feature)
    await s.store.audit(caller, "enrol", identity_id=identity_id, feature_id=fid, face_id=body.face_id or "")
    await match_enrolled_face(s, body.face_id, identity_id)
    return EnrolledOut(identity_id=identity_id, feature_id=fid)


def check_image_size(data: bytes, max_pixels: int) -> None:
    """Refuse, from the header alone, what is not an image or is too large or small to analyse (422)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Image.DecompressionBombError as e:
        raise InvalidInput(f"the image has more than {max_pixels} pixels ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InvalidInput(f"the upload is not a readable image (JPEG, PNG, WebP...): {e}") from None
    if width * height > max_pixels:
        raise InvalidInput(f"the image has {width}x{height} pixels, more than {max_pixels}")
    if min(width, height) < MIN_FACE_SIDE:
        raise InvalidInput(f"the image ({width}x{height} pixels) is too small to hold a face: "
                           f"at least {MIN_FACE_SIDE} pixels on each side")


def _analyse(request: Request, data: bytes):
    from facecodec.frontend import FaceFrontEnd
    from facecodec.images import load_rgb

    rgb = load_rgb(data)
    with _frontend_lock:  # one front end per app, built on first use (MTCNN + dlib load in seconds)
        fe = getattr(request.app.state, "frontend", None)
        if fe is None:
            fe = request.app.state.frontend = FaceFrontEnd()
        return fe.analyze_main(rgb, fallback=False)


@router.post("/{identity_id}/images", response_model=EnrolledOut, status_code=201,
             summary="Enrol the central face of an uploaded photo",
             responses={413: {"description": "the photo is larger than FACESERVER_MAX_UPLOAD_BYTES"},
                        422: {"description": "not an image, too large or small, or no face in it"}})
async def enrol_image(identity_id: Id, image: UploadFile, request: Request, s: ServicesDep, caller: Caller) -> EnrolledOut:
    await s.gallery.get(identity_id)
    data = await image.read(s.settings.max_upload_bytes + 1)
    if len(data) > s.settings.max_upload_bytes:
        raise PayloadTooLarge(f"the image is larger than {s.settings.max_upload_bytes} bytes")
    check_image_size(data, s.settings.max_upload_pixels)
    try:
        face = await asyncio.to_thread(_analyse, request, data)
    except NoFaceError:
        raise InvalidInput("no face was found in the image") from None
    except ImageError as e:
        raise InvalidInput(f"the upload is not a readable image: {e}") from None
    except ValueError as e:  # the front end choked on a readable image: the image's fault, not the server's
        log.warning("enrolment photo could not be analysed: %r", e)
        raise InvalidInput(f"no face can be found in this image ({e})") from None
    from facecodec import base_layer

    # Matching runs on decoded base layers: enrol the photo's feature as its base layer decodes (format 2
    # keeps only its coded components; a raw feature would be falsely rejected more often, see base_layer.comparable).
    fid = await s.gallery.add_feature(identity_id, await asyncio.to_thread(base_layer.comparable, face.feature))
    await s.store.audit(caller, "enrol", identity_id=identity_id, feature_id=fid, origin="image")
    q = face.quality
    return EnrolledOut(identity_id=identity_id, feature_id=fid,
                       quality=QualityOut(probability=q.probability, face_size=q.face_size, fallback=q.fallback))


@router.delete("/{identity_id}/features/{feature_id}", status_code=204, summary="Remove one enrolled feature")
async def remove_feature(identity_id: Id, feature_id: Id, s: ServicesDep, caller: Caller) -> None:
    await s.gallery.remove_feature(identity_id, feature_id)
    s.compactor.erased()
    await s.store.audit(caller, "remove_feature", identity_id=identity_id, feature_id=feature_id)
