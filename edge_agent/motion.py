"""Motion gating: where did the scene change since the last frames, and is it worth a detection?

A camera watching an empty corridor sees the same picture for hours: running the face detector on it
is the edge's largest waste. :class:`MotionGate` compares each frame, in grey at 1/8 size (decoded at
that size from the JPEG, see :class:`edge_agent.sources.Frame`), with a slowly updated background,
and answers the regions of the full frame that changed, grown by a margin (a face moves with its
body) and merged; ``[]`` when nothing moved, so the detector does not run at all. When more than
``full_frame_fraction`` of the frame changed (a light switched on, the camera moved), the region is
the whole frame.

A region stays active for ``hold_s`` after its pixels stopped changing, so a person who pauses is
still looked at for a moment; a background that changed for good (a parked car) is absorbed into the
background within a few seconds (``learning_rate`` per frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in full-frame pixels


@dataclass(frozen=True)
class MotionSettings:
    """What counts as motion (see :class:`edge_agent.settings.MotionConfig`, which these mirror)."""

    enabled: bool = True
    factor: int = 8  # the grey frame is this many times smaller per side (1, 2, 4 or 8)
    threshold: int = 12  # grey levels a pixel must change by
    min_pixels: int = 6  # a change smaller than this many small pixels is noise
    margin: float = 0.6  # regions grow by this fraction of their size (at least one minimum face) per side
    hold_s: float = 1.0
    learning_rate: float = 0.1
    full_frame_fraction: float = 0.4


class MotionGate:
    """Changed regions of one camera's frames. Not thread-safe: one camera worker owns it."""

    def __init__(self, settings: MotionSettings, min_face: float = 40.0):
        self.s = settings
        self.min_face = float(min_face)
        self._background: np.ndarray | None = None
        self._active: np.ndarray | None = None  # last time (s) each small pixel changed

    def regions(self, gray: np.ndarray, time_s: float, full_size: tuple[int, int]) -> list[Box]:
        """Regions of the full frame (``full_size`` = height, width) where ``gray`` (the small grey frame
        at ``time_s``) changed lately; the whole frame for the first one."""
        import cv2

        h, w = full_size
        if not self.s.enabled:
            return [(0, 0, w, h)]
        g = cv2.GaussianBlur(gray, (3, 3), 0).astype(np.float32)
        if self._background is None or self._background.shape != g.shape:
            self._background = g
            self._active = np.full(g.shape, -np.inf, np.float32)
            return [(0, 0, w, h)]
        changed = np.abs(g - self._background) > self.s.threshold
        cv2.accumulateWeighted(g, self._background, self.s.learning_rate)
        self._active[changed] = time_s
        active = self._active >= time_s - self.s.hold_s
        count = int(active.sum())
        if count < self.s.min_pixels:
            return []
        if count > self.s.full_frame_fraction * active.size:
            return [(0, 0, w, h)]
        mask = cv2.dilate(active.astype(np.uint8), np.ones((3, 3), np.uint8))
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        sy, sx = h / gray.shape[0], w / gray.shape[1]
        boxes = []
        for x, y, bw, bh, area in stats[1:n]:
            if area < self.s.min_pixels:
                continue
            x1, y1, x2, y2 = x * sx, y * sy, (x + bw) * sx, (y + bh) * sy
            mx = max(self.min_face, self.s.margin * (x2 - x1))
            my = max(self.min_face, self.s.margin * (y2 - y1))
            boxes.append((max(0, int(x1 - mx)), max(0, int(y1 - my)), min(w, int(x2 + mx)), min(h, int(y2 + my))))
        boxes = merge(boxes)
        if sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) > self.s.full_frame_fraction * h * w * 2:
            return [(0, 0, w, h)]  # many scattered regions: one pass over the frame is cheaper
        return boxes


def merge(boxes: list[Box]) -> list[Box]:
    """Overlapping boxes replaced by their union until none overlap."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        out: list[Box] = []
        for b in boxes:
            for i, o in enumerate(out):
                if b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3]:
                    out[i] = (min(b[0], o[0]), min(b[1], o[1]), max(b[2], o[2]), max(b[3], o[3]))
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return boxes


def covers(regions: list[Box], box: tuple[float, float, float, float]) -> bool:
    """Whether the centre of ``box`` lies in one of ``regions`` (the detector looked there)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(r[0] <= cx < r[2] and r[1] <= cy < r[3] for r in regions)
