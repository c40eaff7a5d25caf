"""Test media made from the committed LFW sample (no binaries in the repository)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FACES = Path(__file__).resolve().parent.parent / "data" / "faces"
FRAME_W, FRAME_H = 640, 360


def person_images() -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in sorted(FACES.glob("*/*.jpg")):
        out.setdefault(p.parent.name, []).append(p)
    return out


def compose(face_bgr: np.ndarray | None, x: int, y: int) -> np.ndarray:
    """A grey 640x360 frame with a 250x250 LFW photo pasted at (x, y)."""
    frame = np.full((FRAME_H, FRAME_W, 3), 90, np.uint8)
    if face_bgr is not None:
        h, w = face_bgr.shape[:2]
        frame[y : y + h, x : x + w] = face_bgr
    return frame


def make_video(path: Path, people: list[str], seconds_each: float = 2.0, fps: float = 10.0,
               gap_s: float = 0.0) -> Path:
    """An MJPG AVI in which each person of ``people`` is in view for ``seconds_each`` seconds,
    drifting slowly to the right, with ``gap_s`` seconds of empty frames between people."""
    import cv2

    imgs = person_images()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (FRAME_W, FRAME_H))
    assert writer.isOpened()
    try:
        for person in people:
            face = cv2.imread(str(imgs[person][0]))
            n = int(round(seconds_each * fps))
            for i in range(n):
                writer.write(compose(face, 100 + 3 * i, 55))
            for _ in range(int(round(gap_s * fps))):
                writer.write(compose(None, 0, 0))
    finally:
        writer.release()
    return path


@pytest.fixture
def short_video(tmp_path) -> Path:
    """Two people, 2 s each, 10 fps."""
    return make_video(tmp_path / "two_people.avi", ["Ashanti", "Kurt_Warner"], 2.0, 10.0, gap_s=1.0)
