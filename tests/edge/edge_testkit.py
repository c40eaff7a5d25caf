"""Helpers of the edge tests: media made from the committed LFW sample (no binaries in the
repository), a scripted gRPC peer, ports and waiting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FACES = ROOT / "tests" / "data" / "faces"
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


class ScriptedPeer:
    """A minimal facewire.v2 FaceIngest server for protocol tests of the client (the real server's
    behaviour is tested against ``analysis_server`` in test_reliability.py). It records what arrives
    (as v1 observations, unpacked by the server's own :func:`analysis_server.grpc_v2.unpack`),
    acknowledges batches unless told not to, and sends what a test queues (v1 server messages,
    translated as the server translates them; uploads come back in v1 form)."""

    def __init__(self, token: str = "secret", ack: bool = True):
        import queue

        self.token = token
        self.ack = ack
        self.stored: dict[str, object] = {}
        self.received: list[str] = []  # every face id that arrived, replays included
        self.batches: list[int] = []
        self.hellos: list[object] = []
        self.metadata: list[dict[str, str]] = []
        self.uploads: "queue.Queue" = queue.Queue()
        self.outbox: "queue.Queue" = queue.Queue()
        self.server = None
        self.port = 0

    def start(self, port: int = 0) -> int:
        from concurrent import futures

        import grpc

        from facewire.v2 import ingest_pb2_grpc as pb_grpc

        peer = self

        class Servicer(pb_grpc.FaceIngestServicer):
            def Stream(self, request_iterator, context):
                return peer._stream(request_iterator, context)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_FaceIngestServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0).wait()
            self.server = None

    def _stream(self, request_iterator, context):
        import queue
        import threading

        import grpc

        from analysis_server.grpc_v2 import StreamState, from_v2_upload, to_v2, unpack
        from facewire.v2 import ingest_pb2 as pb2

        md = dict(context.invocation_metadata())
        self.metadata.append(md)
        if md.get("authorization") != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad camera token")
        out: queue.Queue = queue.Queue()
        done = threading.Event()
        stream = {"state": None, "requested": {}}

        def read() -> None:
            try:
                for msg in request_iterator:
                    kind = msg.WhichOneof("kind")
                    if kind == "hello":
                        self.hellos.append(msg.hello)
                        stream["state"] = StreamState(msg.hello, md.get("x-camera-id", ""))
                    elif kind == "observations":
                        obs, seqs, _ = unpack(msg.observations, stream["state"], md.get("x-camera-id", ""))
                        ids = [o.face_id for o in obs]
                        self.batches.append(len(ids))
                        self.received.extend(ids)
                        for o in obs:
                            self.stored.setdefault(o.face_id, o)
                        if self.ack and seqs:
                            out.put(pb2.ServerMessage(ack=pb2.Ack(through=max(seqs))))
                    elif kind == "enhancement":
                        self.uploads.put(from_v2_upload(msg.enhancement, stream["requested"]))
            except grpc.RpcError:
                pass
            finally:
                done.set()

        threading.Thread(target=read, daemon=True).start()
        while not done.is_set() and context.is_active():
            try:
                yield out.get(timeout=0.05)
                continue
            except queue.Empty:
                pass
            try:
                yield to_v2(self.outbox.get_nowait(), stream["state"], stream["requested"])
            except queue.Empty:
                pass




def start_mjpeg_camera(port: int, images: list[Path]) -> subprocess.Popen:
    """A real process serving an MJPEG stream of ``images`` on ``http://127.0.0.1:PORT/`` (testkit's camera)."""
    proc = subprocess.Popen([sys.executable, "-m", "testkit.camera", "images", str(port), *map(str, images)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "serving"
    return proc
