"""Request and response bodies of the REST API (requests and responses are separate models)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from analysis_server import features

MAX_MS = 2**53  # Unix ms: exact in a Redis score (a double); far beyond any real time
MAX_OFFSET = 10**9  # a page offset Redis can take (its LIMIT is a signed 64-bit integer)
STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


def is_stream_id(value: str) -> bool:
    """Whether ``value`` is a Redis stream id Redis accepts (``<ms>-<seq>``, each below 2**64)."""
    m = STREAM_ID.match(value)
    return m is not None and int(m[1]) < 2**64 and int(m[2]) < 2**64


def _stream_id(value: str | None) -> str | None:
    if value is not None and not is_stream_id(value):
        raise ValueError("an event id is <ms>-<seq>, two integers below 2^64")
    return value


StreamId = Annotated[str | None, AfterValidator(_stream_id)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", examples=["cam-1"])]
Feature = Annotated[list[float], Field(min_length=features.dim(), max_length=features.dim(),
                                       description=f"a {features.dim()}-D decoded face feature")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- faces ---------------------------------------------------------------------------------------
class BoxOut(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class QualityOut(BaseModel):
    probability: float
    face_size: float
    fallback: bool


class MatchOut(BaseModel):
    identity_id: str
    name: str | None
    distance: float


class FaceOut(BaseModel):
    face_id: str
    camera_id: str
    capture_time_ms: int
    received_ms: int
    expires_ms: int
    box: BoxOut
    quality: QualityOut
    track_id: str
    feature_backend: str
    base_layer_model: str
    step_index: int
    base_layer_bytes: int
    match: MatchOut | None


class FaceDetailOut(FaceOut):
    enhancement_cached: bool
    enhancement_layer_bytes: int | None


class FacePageOut(BaseModel):
    items: list[FaceOut]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; null at the end")
    next_offset: int | None = Field(default=None, description="pass as `offset` (without a cursor) for the next "
                                                              "page; null at the end, when paging by cursor, and "
                                                              "after a truncated page (go on from next_cursor)")
    truncated: bool = Field(default=False, description="true when the scan stopped at FACESERVER_SCAN_MAX entries or "
                                                       "FACESERVER_SCAN_TIME_S before filling the page: go on from "
                                                       "next_cursor")


class ErasedOut(BaseModel):
    erased: list[str]
    texture_drop_sent: bool


# -- identities ----------------------------------------------------------------------------------
class FeatureSource(_In):
    """Exactly one of: a decoded feature, a base-layer payload (base64) or a stored face's id."""

    feature: Feature | None = None
    base_layer: str | None = Field(default=None, description="base-layer payload, base64")
    face_id: Id | None = None

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [n for n in ("feature", "base_layer", "face_id") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of feature, base_layer, face_id (got {given or 'none'})")
        return self

    @field_validator("base_layer")
    @classmethod
    def _is_base64(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("base_layer must be base64") from None
        return v


class IdentityCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    watchlist: bool = False
    notes: str = Field(default="", max_length=2000)
    features: list[FeatureSource] = Field(default_factory=list, max_length=64,
                                          description="features to enrol at once (e.g. a face seen on a camera)")


class IdentityUpdate(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    watchlist: bool | None = None
    notes: str | None = Field(default=None, max_length=2000)


class IdentityOut(BaseModel):
    identity_id: str
    name: str
    watchlist: bool
    notes: str
    created_ms: int
    updated_ms: int
    feature_ids: list[str]


class IdentityPageOut(BaseModel):
    items: list[IdentityOut]
    total: int


class EnrolledOut(BaseModel):
    identity_id: str
    feature_id: str
    quality: QualityOut | None = None


class IdentityErasedOut(BaseModel):
    identity_id: str
    faces_erased: list[str]


# -- matching ------------------------------------------------------------------------------------
class Probe(FeatureSource):
    """Exactly one of: feature, base_layer, face_id, identity_id (all its enrolled features)."""

    identity_id: Id | None = None

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [n for n in ("feature", "base_layer", "face_id", "identity_id") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of feature, base_layer, face_id, identity_id (got {given or 'none'})")
        return self


class SearchIn(_In):
    """Retrospective search over stored observations."""

    probe: Probe
    camera_ids: list[Id] | None = Field(default=None, max_length=1000)
    since_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    until_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    threshold: float | None = Field(default=None, gt=0, le=4, description="default: the server's match threshold")
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000, description="hits to skip: the page after `offset` hits "
                                                                 "(a page's `next_offset`)")
    max_scan: int = Field(default=1_000_000, ge=1, le=10_000_000,
                          description="observations to scan at most when the search index is not ready (the "
                                      "server's FACESERVER_SCAN_MAX caps it)")


class SearchHit(BaseModel):
    face_id: str
    camera_id: str
    capture_time_ms: int
    distance: float


class SearchOut(BaseModel):
    hits: list[SearchHit] = Field(description="nearest first (ties: newest first), each with its capture time "
                                              "and camera")
    scanned: int = Field(description="stored faces compared exactly (candidates of the index, or the scan's)")
    truncated: bool = Field(description="true when max_scan (or the server's FACESERVER_SCAN_MAX or "
                                        "FACESERVER_SCAN_TIME_S) stopped the scan before the time range's end")
    threshold: float
    next_offset: int | None = Field(default=None, description="pass as `offset` for the next page of hits; null "
                                                              "at the end")
    index: Literal["faiss-ivf-pq", "exact-scan"] = Field(
        default="exact-scan", description="what answered: the search index (candidates re-ranked exactly) or a "
                                          "scan of the time index (while the search index loads)")


class IdentifyIn(_In):
    """1:N identification against the enrolled gallery."""

    probe: Probe
    k: int = Field(default=5, ge=1, le=100)
    threshold: float | None = Field(default=None, gt=0, le=4)


class CandidateOut(BaseModel):
    identity_id: str
    name: str | None
    distance: float
    match: bool


class IdentifyOut(BaseModel):
    candidates: list[CandidateOut]
    match: CandidateOut | None
    threshold: float
    index: str


class VerifyIn(_In):
    """1:1 verification of two probes."""

    a: Probe
    b: Probe
    threshold: float | None = Field(default=None, gt=0, le=4)


class VerifyOut(BaseModel):
    distance: float
    threshold: float
    same: bool
    metric: Literal["euclidean"] = "euclidean"


# -- system --------------------------------------------------------------------------------------
class CameraOut(BaseModel):
    camera_id: str
    online: bool
    agent_version: str | None
    connected_ms: int | None
    last_seen_ms: int | None
    faces_stored: int


class StatsOut(BaseModel):
    faces_stored: int
    faces_matched: int
    identities: int
    gallery_features: int
    gallery_index: str
    cameras_known: int
    cameras_online: int
    match_threshold: float
    retention_s: int
    observations: dict[str, float]
    watchlist_hits: float


# -- events and audit ----------------------------------------------------------------------------
EventType = Literal["observation", "watchlist_hit", "face_deleted", "identity_deleted", "identity_updated",
                    "face_matched", "watchlist_ack"]


class EventOut(BaseModel):
    """One entry of the events stream (``GET /events``; ``/events/live`` sends the same, as JSON)."""

    id: str = Field(description="the stream id, <ms>-<seq>: pass as `after` (or Last-Event-ID) to resume")
    type: EventType
    face_id: str | None = None
    camera_id: str | None = None
    capture_time_ms: int | None = None
    identity_id: str | None = Field(default=None, description="observation: the ingest match (null: none)")
    distance: float | None = Field(default=None, description="distance of the match (null: none)")
    name: str | None = Field(default=None, description="the identity's current name (never stored in the stream)")
    base_layer_bytes: int | None = Field(default=None, description="observation, live stream only: the base "
                                                                    "layer's size")
    group: str | None = Field(default=None, description="watchlist_ack: the hit group (its first hit's event id)")
    action: Literal["acknowledge", "dismiss"] | None = None
    who: str | None = Field(default=None, description="watchlist_ack: the caller's audit name")
    hits: int | None = Field(default=None, description="watchlist_ack: hits in the group when it was handled")


class AuditEntryOut(BaseModel):
    """One entry of the audit log: who did what, when, to which face or identity, with what outcome."""

    id: str
    who: str = Field(description="key:<fingerprint> of the API key (a dashboard session names its key)")
    action: Literal["image", "thumbnail", "erase_face", "create_identity", "update_identity", "erase_identity",
                    "enrol", "remove_feature", "dashboard_login", "acknowledge_hits", "dismiss_hits", "export_faces",
                    "export_identities"]
    time_ms: int
    face_id: str | None = None
    identity_id: str | None = None
    feature_id: str | None = None
    layer: Literal["base", "full", "context"] | None = None
    status: int | None = Field(default=None, description="image: the HTTP status answered")
    source: Literal["cache", "edge"] | None = Field(default=None, description="image: where the layer came from")
    codec: str | None = Field(default=None, description="image: the codec of the layer shown (or asked for)")
    quality: int | None = Field(default=None, description="image: its quality")
    features: int | None = Field(default=None, description="create_identity: features enrolled with it")
    faces: int | None = Field(default=None, description="erase_identity: faces erased with it; export_faces, "
                                                         "export_identities: rows exported")
    group: str | None = Field(default=None, description="acknowledge_hits, dismiss_hits: the hit group")
    hits: int | None = Field(default=None, description="acknowledge_hits, dismiss_hits: hits in the group")
    origin: Literal["image"] | None = Field(default=None, description="enrol: from an uploaded photo")


# -- watchlist ------------------------------------------------------------------------------------
class HitGroupOut(BaseModel):
    """The watchlist hits of one identity with no pause longer than FACESERVER_WATCHLIST_GAP_S between two of
    them (one alert for a person who stays or comes back soon), until an operator handles them."""

    group_id: str = Field(description="the event id of its first hit")
    identity_id: str
    name: str | None
    state: Literal["open", "acknowledged", "dismissed"]
    hits: int
    tracks: int = Field(description="distinct tracks among the hits (a track: one pass in front of one camera)")
    cameras: list[str]
    first_ms: int
    last_ms: int
    best_face_id: str = Field(description="the closest hit (its thumbnail)")
    best_distance: float
    latest_face_id: str
    handled_by: str | None = None
    handled_ms: int | None = None


class HitGroupPageOut(BaseModel):
    items: list[HitGroupOut]
    gap_s: float = Field(description="FACESERVER_WATCHLIST_GAP_S")
    scanned: int = Field(description="events read (the newest FACESERVER_WATCHLIST_SCAN)")
