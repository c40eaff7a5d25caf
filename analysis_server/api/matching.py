"""Matching on decoded features: retrospective ``/search``, 1:N ``/identify``, 1:1 ``/verify``."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from fastapi import APIRouter

from analysis_server.api.deps import ServicesDep, probe_features
from analysis_server.api.faces import check_cameras
from analysis_server.api.schemas import (
    CandidateOut,
    IdentifyIn,
    IdentifyOut,
    SearchHit,
    SearchIn,
    SearchOut,
    VerifyIn,
    VerifyOut,
)
from analysis_server.errors import InvalidInput
from analysis_server.history import EXACT, KIND
from facecodec import base_layer

router = APIRouter(tags=["matching"])
CHUNK = 4096


def _min_distances(probes: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """For each row of ``feats``, the Euclidean distance to its nearest probe row."""
    d = np.linalg.norm(feats[:, None, :].astype(np.float64) - probes[None, :, :], axis=2)
    return d.min(axis=1)


@router.post("/search", response_model=SearchOut,
             summary="Retrospective search: stored observations (camera and time filters) nearest a probe, paged",
             responses={404: {"description": "the probe's face or identity does not exist, or a camera id never "
                                            "streamed to this server"},
                        422: {"description": "bad probe or parameters, or an identity with no enrolled feature"}})
async def search(body: SearchIn, s: ServicesDep) -> SearchOut:
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
    dist = await asyncio.to_thread(_min_distances, probes, np.stack([f for _, f in live]))
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


@router.post("/identify", response_model=IdentifyOut, summary="1:N identification against the enrolled gallery",
             responses={404: {"description": "the probe's face or identity does not exist"}})
async def identify(body: IdentifyIn, s: ServicesDep) -> IdentifyOut:
    probes = await probe_features(s, body.probe)
    threshold = body.threshold or s.settings.match_threshold
    await s.gallery.refresh_if_stale()
    best: dict[str, float] = {}
    for row in await asyncio.to_thread(s.gallery.identify, probes, body.k):
        for c in row:
            best[c.identity_id] = min(c.distance, best.get(c.identity_id, np.inf))
    ranked = sorted(best.items(), key=lambda kv: kv[1])[: body.k]
    cands = [CandidateOut(identity_id=i, name=s.gallery.name(i), distance=d, match=d <= threshold) for i, d in ranked]
    return IdentifyOut(candidates=cands, match=cands[0] if cands and cands[0].match else None, threshold=threshold,
                       index=s.gallery.index.kind)


@router.post("/verify", response_model=VerifyOut, summary="1:1 verification: are two probes the same person?",
             responses={404: {"description": "a probe's face or identity does not exist"}})
async def verify(body: VerifyIn, s: ServicesDep) -> VerifyOut:
    a = await probe_features(s, body.a)
    b = await probe_features(s, body.b)
    threshold = body.threshold or s.settings.match_threshold
    d = float(_min_distances(a, b).min())
    return VerifyOut(distance=d, threshold=threshold, same=d <= threshold)
