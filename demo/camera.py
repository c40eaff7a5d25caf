"""Simulated IP cameras: sample clips served as MJPEG over HTTP, in real time, looped forever.

The edge agent reads them as it reads a real camera (``--source http://HOST:PORT/NAME.mjpg``):
a live source sampled on the wall clock, so faces arrive at the pace people walk by and the
agent's CPU use stays what a real camera would cost (a video file is read as fast as the
pipeline goes).

    python -m demo.camera --port 8554 [--host 0.0.0.0] [--faces DIR] [--clip-dir DIR]

makes the demo's clips (``entrance``, ``lobby``) and serves them at ``/entrance.mjpg`` and
``/lobby.mjpg``; ``/healthz`` answers 200. The serving is testkit's MJPEG server
(:class:`testkit.camera.MjpegServer`), the one the tests' and benchmarks' cameras use.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from testkit.camera import MjpegServer

log = logging.getLogger("demo.camera")

# Who walks past each camera, in order; one person passes both (search finds them on both).
CAMERAS = {"entrance": ["Sophia_Loren", "Alvaro_Uribe", "Ashanti", "Ben_Howland", "Kurt_Warner"],
           "lobby": ["Kurt_Warner", "Bulent_Ecevit", "Greg_Rusedski", "James_Wolfensohn", "Nathalie_Baye"]}


def jpeg_frames(clip: Path, quality: int = 85) -> tuple[list[bytes], float]:
    """Every frame of ``clip`` as JPEG bytes, and the clip's frame rate."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    finally:
        cap.release()
    if not frames:
        raise OSError(f"no frame could be read from {clip}")
    return frames, fps


class CameraServer(MjpegServer):
    """The demo's clips, each at ``/<name>.mjpg`` (testkit's MJPEG server), from its first frame for each reader."""

    def __init__(self, clips: dict[str, Path], host: str = "127.0.0.1", port: int = 0):
        super().__init__({name: jpeg_frames(path) for name, path in clips.items()}, host, port)


def make_clips(folder: Path, faces_dir: Path) -> dict[str, Path]:
    from demo.clip import make_clip

    return {cam: make_clip(folder / f"{cam}.avi", names, faces_dir) for cam, names in CAMERAS.items()}


def main(argv: list[str] | None = None) -> int:
    from demo.clip import FACES

    p = argparse.ArgumentParser(prog="python -m demo.camera", description="serve the demo's sample clips as MJPEG cameras")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--faces", type=Path, default=FACES, help="folder of <person>/*.jpg (default: tests/data/faces)")
    p.add_argument("--clip-dir", type=Path, default=Path("var/demo/clips"), help="where the clips are written")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    server = CameraServer(make_clips(args.clip_dir, args.faces), args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    log.info("serving %s", ", ".join(server.url(n) for n in server.streams))
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
