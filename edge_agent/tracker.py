"""A light face tracker: one observation per track per interval, the best-quality one.

Faces in consecutive sampled frames are matched to live tracks greedily, best pair first, on
box overlap (IoU) or, when the face moved too far for the boxes to overlap, on the distance
between deep features. Each track collects candidates during a window of ``interval_s``
seconds and keeps the one with the best :attr:`facecodec.frontend.Quality.score`; when the
window closes (or the track is lost) that candidate is emitted. A face in view for a minute
with ``interval_s = 5`` is sent 12 times, not once per frame. A track seen in fewer than
``min_hits`` frames is never sent: a detector's one-frame false positive is not a face.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class Candidate(Generic[T]):
    """One face seen in a frame: what the tracker needs, plus ``payload`` carried through."""

    box: tuple[float, float, float, float]
    feature: np.ndarray = field(repr=False)
    score: float
    time_s: float
    payload: T = field(repr=False, default=None)  # type: ignore[assignment]


@dataclass
class Emission(Generic[T]):
    """The best candidate of one track window."""

    track_id: str
    candidate: Candidate[T]


@dataclass
class Track(Generic[T]):
    track_id: str
    box: tuple[float, float, float, float]
    feature: np.ndarray = field(repr=False)
    last_seen_s: float
    window_start_s: float
    best: Candidate[T] | None = None
    hits: int = 1


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Tracker(Generic[T]):
    """Tracks of one camera. Not thread-safe: one camera worker owns it."""

    def __init__(self, interval_s: float = 5.0, iou_threshold: float = 0.3, max_distance: float = 0.55,
                 ttl_s: float = 2.0, min_hits: int = 2, feature_momentum: float = 0.5):
        self.interval_s = interval_s
        self.iou_threshold = iou_threshold
        self.max_distance = max_distance
        self.ttl_s = ttl_s
        self.min_hits = min_hits
        self.momentum = feature_momentum
        self.tracks: list[Track[T]] = []

    def _match(self, candidates: list[Candidate[T]]) -> list[tuple[int, int]]:
        """(track index, candidate index) pairs, greedy on (same-place first, then nearest feature)."""
        pairs = []
        for ti, t in enumerate(self.tracks):
            for ci, c in enumerate(candidates):
                overlap = iou(t.box, c.box)
                dist = float(np.linalg.norm(t.feature - c.feature))
                if dist > self.max_distance * 1.5:
                    continue  # a different person standing where the track was
                if overlap >= self.iou_threshold or dist <= self.max_distance:
                    pairs.append((-overlap, dist, ti, ci))
        pairs.sort()
        used_t, used_c, out = set(), set(), []
        for _, _, ti, ci in pairs:
            if ti in used_t or ci in used_c:
                continue
            used_t.add(ti)
            used_c.add(ci)
            out.append((ti, ci))
        return out

    def update(self, candidates: list[Candidate[T]], now_s: float) -> list[Emission[T]]:
        """Feed the faces of one frame taken at ``now_s``; returns the observations to send now."""
        matched = self._match(candidates)
        matched_c = {ci for _, ci in matched}
        for ti, ci in matched:
            t, c = self.tracks[ti], candidates[ci]
            t.box = c.box
            f = self.momentum * t.feature + (1 - self.momentum) * c.feature
            t.feature = f.astype(np.float32)
            t.last_seen_s = c.time_s
            t.hits += 1
            if t.best is None or c.score > t.best.score:
                t.best = c
        for ci, c in enumerate(candidates):
            if ci not in matched_c:
                self.tracks.append(Track(uuid.uuid4().hex, c.box, np.asarray(c.feature, np.float32), c.time_s,
                                         c.time_s, c))
        out: list[Emission[T]] = []
        alive = []
        for t in self.tracks:
            lost = now_s - t.last_seen_s > self.ttl_s
            confirmed = t.hits >= self.min_hits
            if confirmed and t.best is not None and (lost or now_s - t.window_start_s >= self.interval_s):
                out.append(Emission(t.track_id, t.best))
                t.best = None
                t.window_start_s = now_s
            if not lost:
                alive.append(t)
        self.tracks = alive
        return out

    def flush(self) -> list[Emission[T]]:
        """Emit every pending best candidate and forget all tracks (the source ended)."""
        out = [Emission(t.track_id, t.best) for t in self.tracks if t.best is not None and t.hits >= self.min_hits]
        self.tracks = []
        return out
