"""Matching on decoded features: retrospective ``/search``, 1:N ``/identify``, 1:1 ``/verify``."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter

from analysis_server import queries
from analysis_server.api.deps import ServicesDep
from analysis_server.api.schemas import (
    CandidateOut,
    IdentifyIn,
    IdentifyOut,
    SearchIn,
    SearchOut,
    VerifyIn,
    VerifyOut,
)

router = APIRouter(tags=["matching"])


@router.post("/search", response_model=SearchOut,
             summary="Retrospective search: stored observations (camera and time filters) nearest a probe, paged",
             responses={404: {"description": "the probe's face or identity does not exist, or a camera id never "
                                            "streamed to this server"},
                        422: {"description": "bad probe or parameters, or an identity with no enrolled feature"}})
async def search(body: SearchIn, s: ServicesDep) -> SearchOut:
    return await queries.search(s, body)


@router.post("/identify", response_model=IdentifyOut, summary="1:N identification against the enrolled gallery",
             responses={404: {"description": "the probe's face or identity does not exist"}})
async def identify(body: IdentifyIn, s: ServicesDep) -> IdentifyOut:
    probes = await queries.probe_features(s, body.probe)
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
    a = await queries.probe_features(s, body.a)
    b = await queries.probe_features(s, body.b)
    threshold = body.threshold or s.settings.match_threshold
    d = float(queries.min_distances(a, b).min())
    return VerifyOut(distance=d, threshold=threshold, same=d <= threshold)
