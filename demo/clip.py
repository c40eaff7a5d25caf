"""Sample camera clips made from the committed LFW test faces (no video is committed).

Each clip is an MJPG AVI: a grey 640x360 frame in which one person's 250x250 photo drifts
slowly across for ``seconds_each`` seconds, then an empty gap, then the next person, as a
camera at a door would see them one at a time.

    python -m demo.clip OUT.avi [--faces DIR] [--people NAME ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

FACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"
FRAME_W, FRAME_H = 640, 360


def people(faces_dir: Path = FACES) -> dict[str, list[Path]]:
    """Person name -> their photos (sorted), from ``faces_dir/<person>/*.jpg``."""
    out: dict[str, list[Path]] = {}
    for p in sorted(Path(faces_dir).glob("*/*.jpg")):
        out.setdefault(p.parent.name, []).append(p)
    if not out:
        raise FileNotFoundError(f"no sample faces under {faces_dir} (expected <person>/*.jpg)")
    return out


def make_clip(path: Path, names: list[str], faces_dir: Path = FACES, seconds_each: float = 3.0,
              gap_s: float = 1.0, fps: float = 10.0, photo_index: int = 0) -> Path:
    """Write the clip of ``names`` (each person's ``photo_index``-th photo) to ``path``."""
    import cv2

    photos = people(faces_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (FRAME_W, FRAME_H))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    empty = np.full((FRAME_H, FRAME_W, 3), 90, np.uint8)
    try:
        for name in names:
            face = cv2.imread(str(photos[name][photo_index % len(photos[name])]))
            h, w = face.shape[:2]
            n = round(seconds_each * fps)
            for i in range(n):
                frame = empty.copy()
                x, y = 60 + (3 * i) % (FRAME_W - w - 60), (FRAME_H - h) // 2
                frame[y : y + h, x : x + w] = face
                writer.write(frame)
            for _ in range(round(gap_s * fps)):
                writer.write(empty)
    finally:
        writer.release()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.clip", description="write a sample camera clip (MJPG AVI)")
    p.add_argument("out", type=Path)
    p.add_argument("--faces", type=Path, default=FACES, help="folder of <person>/*.jpg (default: tests/data/faces)")
    p.add_argument("--people", nargs="*", help="who walks by, in order (default: everyone)")
    args = p.parse_args(argv)
    names = args.people or sorted(people(args.faces))
    make_clip(args.out, names, args.faces)
    sys.stdout.write(f"{args.out}: {len(names)} people\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
