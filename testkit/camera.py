"""Simulated IP cameras: JPEG frames served as MJPEG over HTTP (``multipart/x-mixed-replace``, what IP
cameras serve), looped forever at a frame rate.

The one MJPEG camera of the project: :class:`MjpegServer` serves the demo's cameras (``demo/camera.py``,
also the compose stack's ``camera`` service, so this module needs nothing beyond the standard library
until a command below runs) and, as a process of its own, the cameras of the tests and benchmarks
(:class:`testkit.processes.CameraProcess`)::

    python -m testkit.camera camera PORT SEED      the sample people walking past, a live camera
    python -m testkit.camera images PORT IMAGE...  these JPEG files in a loop, from the first for each reader
    python -m testkit.camera clip PORT FOLDER      a clip of bench/clips.py (its frame rate), a live camera

Each serves its one stream on ``http://127.0.0.1:PORT/`` (any path) and prints ``serving`` once it listens.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger("testkit.camera")

Stream = tuple[list[bytes], float]  # JPEG frames, frames per second


class MjpegServer:
    """Streams of JPEG frames on ``host:port``, each at ``/<name>.mjpg``; a server of one stream serves it
    at every path (a test names its URL as it likes). ``/healthz`` answers 200.

    Each reader gets the frames in a loop at the stream's rate, from the first. ``live``: the frame
    shown follows the wall clock instead, so a reader that reconnects sees a camera that kept running.
    :meth:`start` serves from a thread of this process, :meth:`serve_forever` from the calling thread.
    """

    def __init__(self, streams: dict[str, Stream], host: str = "127.0.0.1", port: int = 0, live: bool = False):
        self.streams = streams
        stopping = self._stopping = threading.Event()
        only = next(iter(streams)) if len(streams) == 1 else None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    return
                name = self.path.strip("/").removesuffix(".mjpg")
                if name not in streams and only is None:
                    self.send_error(404, f"no camera {name!r}; try {', '.join('/' + n + '.mjpg' for n in streams)}")
                    return
                frames, fps = streams[name if name in streams else only]
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                period, due, i = 1.0 / fps, time.monotonic(), 0
                try:
                    while not stopping.is_set():
                        f = frames[(int(time.time() * fps) if live else i) % len(frames)]
                        i += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(f)
                                         + f + b"\r\n")
                        due += period
                        time.sleep(max(0.0, due - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, fmt: str, *args) -> None:
                log.debug("camera: " + fmt, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, name: str) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/{name}.mjpg"

    def start(self) -> MjpegServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg-cameras", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def sample_people_frames(seed: int) -> list[bytes]:
    """The sample people walking past a camera in turn, in an order drawn from ``seed``: 1.5 s each
    with 0.5 s of empty frames between them at 10 frames per second."""
    import random

    import cv2
    import numpy as np

    from testkit.processes import FACES

    people = sorted({p.parent.name: p for p in sorted(FACES.glob("*/*.jpg"))}.items())
    random.Random(seed).shuffle(people)
    frames = []
    for _name, path in people:
        face = cv2.imread(str(path))
        for i in range(15):
            frame = np.full((360, 640, 3), 90, np.uint8)
            frame[55:305, 100 + 3 * i : 350 + 3 * i] = face
            frames.append(cv2.imencode(".jpg", frame)[1].tobytes())
        blank = cv2.imencode(".jpg", np.full((360, 640, 3), 90, np.uint8))[1].tobytes()
        frames += [blank] * 5
    return frames


USAGE = """usage: python -m testkit.camera camera PORT SEED    the sample people, a live camera
       python -m testkit.camera images PORT IMAGE...   these JPEG files in a loop, from the first for each reader
       python -m testkit.camera clip PORT FOLDER       a clip of bench/clips.py (its frame rate), a live camera"""


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "camera":
        stream, live = (sample_people_frames(int(argv[2])), 10.0), True
    elif len(argv) == 3 and argv[0] == "clip":
        folder = Path(argv[2])
        rate = json.loads((folder / "truth.json").read_text())["fps"]
        stream, live = ([f.read_bytes() for f in sorted(folder.glob("frame_*.jpg"))], rate), True
    elif len(argv) >= 3 and argv[0] == "images":
        stream, live = ([Path(f).read_bytes() for f in argv[2:]], 10.0), False
    else:
        sys.exit(USAGE)
    server = MjpegServer({"video": stream}, port=int(argv[1]), live=live)
    print("serving", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
