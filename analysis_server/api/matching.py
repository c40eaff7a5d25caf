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

router = APIRouter(tags=["matching"])
CHUNK = 4096


def _min_distances(probes: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """For each row of ``feats``, the Euclidean distance to its nearest probe row."""
    d = np.linalg.norm(feats[:, None, :].astype(np.float64) - probes[None, :, :], axis=2)
    return d.min(axis=1)


@router.post("/search", response_model=SearchOut,
             summary="Retrospective search: stored observations (camera and time filters) near a probe",
             responses={404: {"description": "the probe's face or identity does not exist, or a camera id never "
                                            "streamed to this server"},
                        422: {"description": "bad probe or parameters, or an identity with no enrolled feature"}})
async def search(body: SearchIn, s: ServicesDep) -> SearchOut:
    t0 = time.perf_counter()
    if body.since_ms is not None and body.until_ms is not None and body.since_ms > body.until_ms:
        raise InvalidInput("since_ms is after until_ms")
    if body.camera_ids:
        await check_cameras(s, body.camera_ids)
    probes = await probe_features(s, body.probe)
    threshold = body.threshold or s.settings.match_threshold
    keys = [s.store.keys.camera_faces(c) for c in dict.fromkeys(body.camera_ids)] if body.camera_ids \
        else [s.store.keys.faces]
    hits: list[SearchHit] = []
    scanned, truncated = 0, False
    max_scan = min(body.max_scan, s.settings.scan_max)  # bounded by the server, whatever the request asks
    deadline = t0 + s.settings.scan_time_s
    for key in keys:
        offset = 0
        while True:
            budget = max_scan - scanned
            if budget <= 0 or (scanned and time.perf_counter() > deadline):  # one chunk at least
                truncated = bool(await s.store.scan_ids(key, body.since_ms, body.until_ms, offset, 1)) or truncated
                break
            ids = await s.store.scan_ids(key, body.since_ms, body.until_ms, offset, min(CHUNK, budget))
            if not ids:
                break
            offset += len(ids)
            rows = await s.store.get_many(ids, fields=("feat", "camera", "t"))
            live = [(f, r) for f, r in zip(ids, rows) if r is not None and r[0] is not None]
            scanned += len(ids)
            if not live:
                continue
            feats = np.stack([np.frombuffer(r[0], np.float32) for _, r in live])
            d = await asyncio.to_thread(_min_distances, probes, feats)
            for (f, r), dist in zip(live, d):
                if dist <= threshold:
                    hits.append(SearchHit(face_id=f, camera_id=r[1].decode(), capture_time_ms=int(r[2]),
                                          distance=float(dist)))
    hits.sort(key=lambda h: (h.distance, -h.capture_time_ms))
    s.metrics.searches.observe(time.perf_counter() - t0)
    return SearchOut(hits=hits[: body.limit], scanned=scanned, truncated=truncated, threshold=threshold)


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
