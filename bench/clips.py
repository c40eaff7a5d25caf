"""Synthetic surveillance clips: LFW faces moving over a real background texture, with ground truth.

``python -m bench.clips passing|scene --out DIR [--people N] [--size 1280x720]`` writes DIR/frame_NNNNN.jpg
(a folder the edge agent reads as a camera, ``--source DIR``) and DIR/truth.json: the frame rate, the
size, and per frame every face drawn (person, face box). Nothing is hand-edited; the same arguments give
the same clip.

- **Background**: a mosaic of the corners of LFW photos (offices, crowds, studios: what stands behind the
  people in news photos), each 64x64 corner scaled 2x, laid at random, lightly blurred. A real texture:
  MTCNN finds as many candidate windows in it as in a street scene, unlike a flat grey frame.
- **People**: the head and shoulders of one photo per person, scaled so that the face is ``face_px`` wide,
  pasted with a feathered elliptic mask.
- ``passing``: people pass one spot back to back (each drifts about the spot for ``frames_each`` frames,
  the next one appears where the last one stood): the case where a tracker that trusts box overlap joins
  different people.
- ``scene``: 0 to 3 people walk across the frame at a time, with empty stretches (a static scene).

Faces come from the people of ``splits/test_people.txt`` (the committed sample is test people too);
background corners from ``splits/train_people.txt`` when the LFW folder is there, else from the sample.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "faces"
FACE_IN_LFW = 110.0  # px: width of the face box MTCNN finds in a 250x250 deep-funneled photo (about 0.44 of it)
SPRITE = (slice(28, 238), slice(50, 200))  # head and shoulders in a deep-funneled photo (rows, columns)
FACE_CENTRE_IN_SPRITE = (125 - 28, 125 - 50)  # the photo's centre, where its face is (row, column)


@dataclass
class Person:
    name: str
    image: np.ndarray  # 250x250 RGB


def lfw_root() -> Path | None:
    import os

    root = Path(os.environ.get("LFW_ROOT", ROOT.parent / "shared" / "datasets" / "lfw"))
    return root if (root / "lfw-deepfunneled").is_dir() else None


def load_people(n: int, split: str = "test", seed: int = 0, sample: bool = False) -> list[Person]:
    """``n`` people of ``split`` (first photo each), drawn at random (repeated when there are fewer);
    the committed sample (test people) without LFW or when ``sample`` is set."""
    from facecodec.images import load_rgb

    root = None if sample else lfw_root()
    if root is None:
        folders = sorted(SAMPLE.iterdir())
    else:
        names = (root / "splits" / f"{split}_people.txt").read_text().split()
        folders = [root / "lfw-deepfunneled" / name for name in names]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(folders))
    people = []
    for i in order[:n] if n <= len(folders) else np.resize(order, n):  # noqa: B020
        photo = sorted(folders[i].glob("*.jpg"))[0]
        people.append(Person(folders[i].name, load_rgb(photo)))
    return people


def background(size: tuple[int, int], seed: int = 0, corners: list[np.ndarray] | None = None) -> np.ndarray:
    """A (h, w, 3) mosaic of 2x-scaled 64x64 corners of LFW photos."""
    import cv2

    h, w = size
    rng = np.random.default_rng(seed)
    if corners is None:
        corners = [p.image for p in load_people(200, "train", seed + 1)]
    tiles = []
    for img in corners:
        for r, c in ((16, 16), (16, 170), (170, 16), (170, 170)):  # inside the funnelling's black margins
            tiles.append(img[r : r + 64, c : c + 64])
    out = np.empty((h + 128, w + 128, 3), np.uint8)
    for y in range(0, h + 1, 128):
        for x in range(0, w + 1, 128):
            tile = tiles[rng.integers(len(tiles))]
            if rng.random() < 0.5:
                tile = tile[:, ::-1]
            out[y : y + 128, x : x + 128] = cv2.resize(tile, (128, 128), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(out[:h, :w], (3, 3), 0)


class Sprite:
    """One person's head and shoulders, scaled for a face ``face_px`` wide, with a feathered alpha mask."""

    def __init__(self, person: Person, face_px: float):
        import cv2

        crop = person.image[SPRITE]
        self.scale = face_px / FACE_IN_LFW
        size = (max(8, round(crop.shape[1] * self.scale)), max(8, round(crop.shape[0] * self.scale)))
        self.rgb = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        hh, ww = self.rgb.shape[:2]
        yy, xx = np.mgrid[0:hh, 0:ww]
        r = ((xx - ww / 2) / (ww / 2)) ** 2 + ((yy - hh * 0.45) / (hh * 0.55)) ** 2
        self.alpha = np.clip((1.0 - r) * 4, 0, 1)[..., None].astype(np.float32)
        self.face_px = face_px
        self.centre = (FACE_CENTRE_IN_SPRITE[0] * self.scale, FACE_CENTRE_IN_SPRITE[1] * self.scale)

    def paste(self, frame: np.ndarray, cx: float, cy: float) -> list[float] | None:
        """Draw with the face centred at (cx, cy); returns the face box, or None when off the frame."""
        top, left = round(cy - self.centre[0]), round(cx - self.centre[1])
        hh, ww = self.rgb.shape[:2]
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + hh, frame.shape[0]), min(left + ww, frame.shape[1])
        if y1 <= y0 or x1 <= x0:
            return None
        sy, sx = slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)
        region = frame[y0:y1, x0:x1].astype(np.float32)
        a = self.alpha[sy, sx]
        frame[y0:y1, x0:x1] = (a * self.rgb[sy, sx] + (1 - a) * region).astype(np.uint8)
        half = self.face_px / 2
        box = [cx - half, cy - half * 1.15, cx + half, cy + half * 1.15]
        fully_in = box[0] >= 0 and box[1] >= 0 and box[2] <= frame.shape[1] and box[3] <= frame.shape[0]
        return [round(v, 1) for v in box] if fully_in else None


def passing(people: list[Person], size=(720, 1280), frames_each: int = 12, face_px: float = 110, seed: int = 0,
            corners: list[np.ndarray] | None = None):
    """Frames and truth: people one after the other about one spot (the frame's centre)."""
    bg = background(size, seed, corners)
    rng = np.random.default_rng(seed)
    cy, cx = size[0] / 2, size[1] / 2
    for k, person in enumerate(people):
        sprite = Sprite(person, face_px * rng.uniform(0.9, 1.1))
        drift = rng.uniform(-1, 1, 2) * face_px * 0.4
        for t in range(frames_each):
            frame = bg.copy()
            u = t / max(1, frames_each - 1) - 0.5
            box = sprite.paste(frame, cx + drift[0] * u, cy + drift[1] * u)
            yield frame, ([{"person": person.name, "index": k, "box": box}] if box else [])


def scene(people: list[Person], size=(720, 1280), seconds: float = 60, fps: float = 10, face_px: float = 100,
          seed: int = 0, empty_every_s: float = 20, empty_s: float = 5):
    """Frames and truth: up to 3 people at a time walking across, none for ``empty_s`` every ``empty_every_s``."""
    bg = background(size, seed)
    rng = np.random.default_rng(seed)
    walkers: list[dict] = []
    queue = list(enumerate(people))
    h, w = size
    for i in range(int(seconds * fps)):
        t = i / fps
        quiet = (t % empty_every_s) >= empty_every_s - empty_s
        walkers = [p for p in walkers if -face_px * 2 < p["x"] < w + face_px * 2]
        want = 0 if quiet else 1 + int(rng.integers(0, 3)) if len(walkers) == 0 else len(walkers)
        while len(walkers) < min(3, want) and queue and not quiet:
            k, person = queue.pop(0)
            queue.append((k, person))
            direction = 1 if rng.random() < 0.5 else -1
            walkers.append({"k": k, "person": person, "sprite": Sprite(person, face_px * rng.uniform(0.8, 1.2)),
                            "x": -face_px if direction > 0 else w + face_px, "dir": direction,
                            "y": rng.uniform(h * 0.25, h * 0.75), "speed": rng.uniform(150, 300)})
        frame = bg.copy()
        truth = []
        for p in walkers:
            p["x"] += p["dir"] * p["speed"] / fps
            box = p["sprite"].paste(frame, p["x"], p["y"])
            if box:
                truth.append({"person": p["person"].name, "index": p["k"], "box": box})
        yield frame, truth


def write(frames, out: Path, fps: float, quality: int = 90) -> dict:
    """Write a clip as JPEG files and truth.json; returns the truth."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("frame_*.jpg"):
        old.unlink()
    truth = {"fps": fps, "frames": []}
    for i, (frame, faces) in enumerate(frames):
        cv2.imwrite(str(out / f"frame_{i:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, quality])
        truth["frames"].append(faces)
        truth["size"] = [frame.shape[1], frame.shape[0]]
    (out / "truth.json").write_text(json.dumps(truth))
    return truth


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.clips", description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("passing", "scene"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--people", type=int, default=120)
    p.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=60.0, help="scene: length")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    w, h = map(int, a.size.split("x"))
    people = load_people(a.people, seed=a.seed)
    frames = passing(people, (h, w), seed=a.seed) if a.kind == "passing" else \
        scene(people, (h, w), a.seconds, a.fps, seed=a.seed)
    truth = write(frames, a.out, a.fps)
    print(f"{len(truth['frames'])} frames of {w}x{h} in {a.out}")


if __name__ == "__main__":
    main()
