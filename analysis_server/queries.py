"""The reads REST and the dashboard share: one function per question, answering in the API's schemas.

Route handlers (``analysis_server/api/``) take a request apart, check it and call these; the
dashboard's pages (``analysis_server/dashboard/pages.py``) call the same ones, so a page and the REST
call behind the same question answer from the same code (and neither reads Redis itself).
"""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np

from analysis_server import watchlist
from analysis_server.api.schemas import (
    AuditEntryOut,
    BoxOut,
    CameraOut,
    FaceOut,
    FacePageOut,
    FeatureSource,
    HitGroupOut,
    HitGroupPageOut,
    MatchOut,
    Probe,
    QualityOut,
    SearchHit,
    SearchIn,
    SearchOut,
    StatsOut,
)
from analysis_server.errors import InvalidInput, NotFound
from analysis_server.gallery import check_feature
from analysis_server.history import EXACT, KIND
from analysis_server.services import Services
from analysis_server.store import FaceRecord
from analysis_server.validation import ValidationFailure, decode_feature
from facecodec import base_layer

CHUNK = 4096  # records read per round trip by the exact search (no index)


# -- faces ---------------------------------------------------------------------------------------
def face_out(s: Services, f: FaceRecord, cls=FaceOut, **extra) -> FaceOut:
    """A stored face as the API shows it (``cls``: FaceOut or FaceDetailOut with its ``extra`` fields)."""
    match = MatchOut(identity_id=f.identity_id, name=s.gallery.name(f.identity_id), distance=f.distance) \
        if f.identity_id else None
    return cls(face_id=f.face_id, camera_id=f.camera_id, capture_time_ms=f.capture_time_ms, received_ms=f.received_ms,
               expires_ms=f.capture_time_ms + s.settings.retention_s * 1000,
               box=BoxOut(x1=f.box[0], y1=f.box[1], x2=f.box[2], y2=f.box[3]),
               quality=QualityOut(probability=f.probability, face_size=f.face_size, fallback=f.fallback),
               track_id=f.track_id, feature_backend=f.backend, base_layer_model=f.model, step_index=f.step_index,
               base_layer_bytes=len(f.base_layer), match=match, **extra)


async def check_cameras(s: Services, camera_ids) -> None:
    """404 for a camera id that never streamed to this server (a typo would otherwise list nothing, 200)."""
    for c in camera_ids:
        if not (s.link.session(c) or await s.store.camera_known(c)):
            raise NotFound(f"no camera {c!r} has ever streamed to this server (GET /cameras lists the known ones)")


async def faces_page(s: Services, camera: str | None = None, identity: str | None = None,
                     matched: bool | None = None, since_ms: int | None = None, until_ms: int | None = None,
                     cursor: str | None = None, offset: int = 0, limit: int = 50) -> FacePageOut:
    """One page of stored faces, newest first (``GET /faces``); 404 for a camera that never streamed here."""
    if camera:
        await check_cameras(s, [camera])
    # Every filter is read from a time index (all faces, matched or not, one camera, one identity),
    # so a page reads about `limit` entries; entries whose record no longer agrees (erased, re-matched)
    # and an identity's faces on other cameras are skipped, up to scan_max entries or scan_time_s
    # (one chunk at least), then the page answers truncated=true with where to go on.
    page = await s.store.page(camera=camera, identity=identity, matched=matched, since_ms=since_ms,
                              until_ms=until_ms, limit=limit, cursor=cursor or None, skip=offset,
                              max_scan=s.settings.scan_max, deadline=time.monotonic() + s.settings.scan_time_s)
    more = page.next_cursor is not None
    return FacePageOut(items=[face_out(s, r) for r in page.records], next_cursor=page.next_cursor,
                       next_offset=offset + len(page.records) if more and not cursor and not page.truncated else None,
                       truncated=page.truncated)


# -- probes and retrospective search -------------------------------------------------------------
async def source_feature(services: Services, src: FeatureSource) -> np.ndarray:
    """The decoded feature a request names (shape (dim,): :func:`analysis_server.features.dim`); 404 / 422
    when it cannot be had."""
    if src.feature is not None:
        return check_feature(src.feature)
    if src.base_layer is not None:
        try:
            return decode_feature(base64.b64decode(src.base_layer)).feature.astype(np.float32)
        except ValidationFailure as e:
            raise InvalidInput(str(e)) from None
    face = await services.store.get(src.face_id)
    if face is None:
        raise NotFound(f"no stored face {src.face_id!r} (unknown or expired)")
    return face.feature


async def probe_features(services: Services, probe: Probe) -> np.ndarray:
    """Probe rows (n, dim): one feature, or every enrolled feature of an identity."""
    if probe.identity_id is not None:
        return await services.gallery.features(probe.identity_id)
    return (await source_feature(services, probe))[None]


async def search(s: Services, body: SearchIn) -> SearchOut:
    """Stored faces nearest a probe within the body's window and cameras, ranked and paged (``POST /search``)."""
    t0 = time.perf_counter()
    if body.since_ms is not None and body.until_ms is not None and body.since_ms > body.until_ms:
        raise InvalidInput("since_ms is after until_ms")
    cameras = list(dict.fromkeys(body.camera_ids)) if body.camera_ids else None
    if cameras:
        await check_cameras(s, cameras)
    probes = await probe_features(s, body.probe)
    threshold = body.threshold or s.settings.match_threshold
    want = body.offset + body.limit
    history = s.history
    if history is not None and history.ready.is_set():
        # Candidates from the index (approximate), then each one's record read and its base layer
        # decoded: distances, times and cameras are the stored ones, and a face that is gone is not answered.
        await history.catch_up()  # every face stored before this request, by any replica
        k = min(max(history.rerank, 2 * want), 20_000)
        found = await asyncio.to_thread(history.index.search, probes, k, body.since_ms, body.until_ms, cameras)
        rows = [r for r in await s.store.rows_by_hash([c.h for c in found]) if r is not None and
                _in_filter(r, body.since_ms, body.until_ms, cameras)]
        hits = await _hits(probes, rows, threshold)
        scanned, truncated, index = len(found), False, KIND
    else:
        hits, scanned, truncated = await _scan(s, probes, threshold, body.since_ms, body.until_ms, cameras,
                                               min(body.max_scan, s.settings.scan_max), t0 + s.settings.scan_time_s)
        index = EXACT
    hits.sort(key=lambda h: (h.distance, -h.capture_time_ms, h.face_id))
    s.metrics.searches.observe(time.perf_counter() - t0)
    return SearchOut(hits=hits[body.offset: want], scanned=scanned, truncated=truncated, threshold=threshold,
                     next_offset=want if len(hits) > want else None, index=index)


def min_distances(probes: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """For each row of ``feats``, the Euclidean distance to its nearest probe row."""
    d = np.linalg.norm(feats[:, None, :].astype(np.float64) - probes[None, :, :], axis=2)
    return d.min(axis=1)


def _in_filter(row: tuple, since_ms: int | None, until_ms: int | None, cameras: list[str] | None) -> bool:
    _, camera, t, _ = row
    return (since_ms is None or t >= since_ms) and (until_ms is None or t <= until_ms) and \
        (cameras is None or camera in cameras)


async def _hits(probes: np.ndarray, rows: list[tuple[str, str, int, bytes]], threshold: float) -> list[SearchHit]:
    """The faces (face id, camera, capture ms, base layer) within ``threshold`` of a probe, with their
    exact distances (base layers decoded together)."""
    rows = list({r[0]: r for r in rows}.values())
    if not rows:
        return []
    decoded = await asyncio.to_thread(base_layer.decode_many, [r[3] for r in rows])
    live = [(r, d.feature) for r, d in zip(rows, decoded) if not isinstance(d, Exception)]
    if not live:
        return []
    dist = await asyncio.to_thread(min_distances, probes, np.stack([f for _, f in live]))
    return [SearchHit(face_id=r[0], camera_id=r[1], capture_time_ms=r[2], distance=float(d))
            for (r, _), d in zip(live, dist) if d <= threshold]


async def _scan(s, probes: np.ndarray, threshold: float, since_ms: int | None, until_ms: int | None,
                cameras: list[str] | None, max_scan: int, deadline: float) -> tuple[list[SearchHit], int, bool]:
    """The exact search: every stored face of the window (and cameras) read from the time index and
    compared, at most ``max_scan`` of them and until ``deadline`` (``time.perf_counter()``)."""
    hits: list[SearchHit] = []
    scanned, truncated = 0, False
    for camera in cameras or [None]:
        cursor = None
        while True:
            if scanned >= max_scan or (scanned and time.perf_counter() > deadline):  # one chunk at least
                truncated = True
                break
            page = await s.store.page(camera=camera, since_ms=since_ms, until_ms=until_ms, cursor=cursor,
                                      limit=min(CHUNK, max_scan - scanned))
            scanned += len(page.records)
            hits += await _hits(probes, [(r.face_id, r.camera_id, r.capture_time_ms, r.base_layer)
                                         for r in page.records], threshold)
            cursor = page.next_cursor
            if cursor is None:
                break
        if truncated:
            break
    return hits, scanned, truncated


# -- cameras, counts, watchlist, audit -----------------------------------------------------------------
async def cameras(s: Services) -> list[CameraOut]:
    """Known cameras and whether their stream is open (on this replica or another)."""
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


async def stats(s: Services) -> StatsOut:
    """Counts: faces, identities, cameras, ingest outcomes."""
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


def group_out(s: Services, g: watchlist.HitGroup) -> HitGroupOut:
    return HitGroupOut(**g.as_dict(s.gallery.name(g.identity_id)))


async def hit_groups(s: Services, state: str = "unhandled", limit: int = 50) -> HitGroupPageOut:
    """Watchlist hits grouped into alerts, newest first, of the groups in ``state``."""
    groups, scanned = await watchlist.hit_groups(s)
    keep = {"open": {"open"}, "unhandled": {"open", "acknowledged"}, "all": set(watchlist.ACTIONS.values()) | {"open"}}
    items = [group_out(s, g) for g in groups if g.state in keep[state]][:limit]
    return HitGroupPageOut(items=items, gap_s=s.settings.watchlist_gap_s, scanned=scanned)


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


async def audit(s: Services, count: int = 100, face_id: str | None = None) -> list[AuditEntryOut]:
    """The audit log's newest ``count`` entries (about one face), typed."""
    return [audit_out(e) for e in await s.store.audit_entries(count, face_id)]
