"""A light, appearance-aware face tracker: a track is one person; one observation per track per interval.

Faces in consecutive sampled frames are matched to live tracks greedily, nearest deep feature first.
A face continues a track only if **both** hold:

- its feature is within ``max_distance`` of the track's (the track keeps its last feature and a running
  mean; the nearer counts). dlib's own same-person threshold is 0.6; consecutive sightings of one person
  are typically 0.2-0.4 apart, different people 0.6-1.0, so the default 0.5 keeps two people apart even
  when one stands exactly where the other stood;
- it is where the track could be by now: its centre is within ``(1 + max_speed * dt)`` box widths of the
  track's last box, ``dt`` seconds later (a face does not cross the frame between two frames).

Box overlap alone never joins anything: that is how a tracker mixes people who pass the same spot
back to back. A face that matches no track starts one.

Each track collects candidates during a window of ``interval_s`` seconds and keeps the one with the best
:attr:`facecodec.frontend.Quality.score`; when the window closes (or the track is lost, ``ttl_s`` after
it was last seen) that candidate is emitted. A face in view for a minute with ``interval_s = 5`` is sent
12 times, not once per frame. A track seen in fewer than ``min_hits`` frames is never sent: a detector's
one-frame false positive is not a face.

With motion gating the detector does not look everywhere in every frame: :meth:`Tracker.update` is told
which boxes it looked at (``looked``); a track it did not look at is held (counted as seen again: nothing
moved there) provided it was found the last time the detector looked. A face that never moves is thus
observed once per track, not once per interval.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
Box = tuple[float, float, float, float]


@dataclass
class Sighting(Generic[T]):
    """One face seen in a frame: what the tracker needs, plus ``payload`` carried through."""

    box: Box
    feature: np.ndarray = field(repr=False)
    score: float
    time_s: float
    payload: T = field(repr=False, default=None)  # type: ignore[assignment]


@dataclass
class Emission(Generic[T]):
    """The best candidate of one track window."""

    track_id: str
    candidate: Sighting[T]


@dataclass
class Track(Generic[T]):
    track_id: str
    box: Box
    feature: np.ndarray = field(repr=False)  # last seen
    mean: np.ndarray = field(repr=False)  # running mean of every sighting
    last_seen_s: float
    window_start_s: float
    best: Sighting[T] | None = None
    hits: int = 1
    missed: bool = False  # the detector looked where the track was and did not find it


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reachable(track_box: Box, box: Box, dt: float, max_speed: float) -> bool:
    """Whether a face at ``track_box`` can be at ``box`` ``dt`` seconds later."""
    width = max(track_box[2] - track_box[0], box[2] - box[0], 1.0)
    dx = (box[0] + box[2] - track_box[0] - track_box[2]) / 2
    dy = (box[1] + box[3] - track_box[1] - track_box[3]) / 2
    return float(np.hypot(dx, dy)) <= width * (1.0 + max_speed * max(dt, 0.0))


class Tracker(Generic[T]):
    """Tracks of one camera. Not thread-safe: one camera worker owns it."""

    def __init__(self, interval_s: float = 5.0, max_distance: float = 0.5, ttl_s: float = 2.0, min_hits: int = 2,
                 max_speed: float = 3.0, momentum: float = 0.7):
        self.interval_s = interval_s
        self.max_distance = max_distance
        self.ttl_s = ttl_s
        self.min_hits = min_hits
        self.max_speed = max_speed
        self.momentum = momentum
        self.tracks: list[Track[T]] = []

    def _match(self, candidates: list[Sighting[T]]) -> list[tuple[int, int]]:
        """(track index, candidate index) pairs, greedy on feature distance, within both gates."""
        pairs = []
        for ti, t in enumerate(self.tracks):
            for ci, c in enumerate(candidates):
                f = np.asarray(c.feature, np.float32)
                dist = min(float(np.linalg.norm(t.feature - f)), float(np.linalg.norm(t.mean - f)))
                if dist <= self.max_distance and reachable(t.box, c.box, c.time_s - t.last_seen_s, self.max_speed):
                    pairs.append((dist, ti, ci))
        pairs.sort()
        used_t, used_c, out = set(), set(), []
        for _, ti, ci in pairs:
            if ti in used_t or ci in used_c:
                continue
            used_t.add(ti)
            used_c.add(ci)
            out.append((ti, ci))
        return out

    def update(self, candidates: list[Sighting[T]], now_s: float,
               looked: Callable[[Box], bool] | None = None) -> list[Emission[T]]:
        """Feed the faces of one frame taken at ``now_s``; returns the observations to send now.

        ``looked(box)`` says whether the detector looked at ``box`` in this frame (default: it looked
        everywhere). Tracks it did not look at, and that were found the last time it did, are held."""
        matched = self._match(candidates)
        matched_t = {ti for ti, _ in matched}
        matched_c = {ci for _, ci in matched}
        for ti, ci in matched:
            t, c = self.tracks[ti], candidates[ci]
            f = np.asarray(c.feature, np.float32)
            t.box, t.feature = c.box, f
            t.mean = (self.momentum * t.mean + (1 - self.momentum) * f).astype(np.float32)
            t.last_seen_s = c.time_s
            t.hits += 1
            t.missed = False
            if t.best is None or c.score > t.best.score:
                t.best = c
        for ti, t in enumerate(self.tracks):
            if ti in matched_t:
                continue
            if looked is not None and not looked(t.box) and not t.missed:
                t.last_seen_s = now_s  # nothing moved where it is: still there (a frame it is seen in)
                t.hits += 1
            else:
                t.missed = True
        for ci, c in enumerate(candidates):
            if ci not in matched_c:
                f = np.asarray(c.feature, np.float32)
                self.tracks.append(Track(uuid.uuid4().hex, c.box, f, f.copy(), c.time_s, c.time_s, c))
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
