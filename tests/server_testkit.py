"""Helpers of every test that runs an analysis server (tests/server, security, dashboard): a
server in a background thread, a factory of them on one Redis, a real edge-side gRPC client."""

from __future__ import annotations

import asyncio
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import redis

from analysis_server.runtime import AnalysisServer
from analysis_server.settings import ServerSettings
from facewire.v1 import ingest_pb2 as pb
from facewire.v1 import ingest_pb2_grpc

API_KEY = "test-api-key-0001"
TOKENS = {"cam-1": "token-cam-1", "cam-2": "token-cam-2"}

class ServerThread:
    """An :class:`AnalysisServer` running in its own event loop on a background thread."""

    def __init__(self, settings: ServerSettings):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = AnalysisServer(settings)
        self.call(self.server.start(), timeout=120)

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def services(self):
        return self.server.services

    @property
    def settings(self) -> ServerSettings:
        return self.server.settings

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def stop(self) -> None:
        try:
            self.call(self.server.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class ServerFactory:
    """Starts :class:`ServerThread` servers on one Redis, each under its own key prefix (a fresh one
    unless given) with the test credentials; :meth:`close` stops those still running and erases
    every key of their prefixes. ``defaults`` are setting overrides for every server it starts."""

    def __init__(self, redis_url: str, data_dir: Path, **defaults):
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.defaults = defaults
        self.started: list[ServerThread] = []
        self.prefixes: list[str] = []

    def __call__(self, prefix: str | None = None, **overrides) -> ServerThread:
        prefix = prefix or f"t{secrets.token_hex(4)}"
        self.prefixes.append(prefix)
        values = {"host": "127.0.0.1", "grpc_port": 0, "http_port": 0, "redis_url": self.redis_url,
                  "key_prefix": prefix, "data_dir": self.data_dir, "api_keys": API_KEY, "camera_tokens": TOKENS,
                  "grpc_grace_s": 0.5, "enhancement_timeout_s": 5.0,
                  # a small search index trains in a second (tests/server/test_history.py checks the default one)
                  "history_nlist": 64, **self.defaults, **overrides}
        server = ServerThread(ServerSettings(**values))
        self.started.append(server)
        return server

    def close(self) -> None:
        for s in self.started:
            if not s.loop.is_closed():  # a test may have stopped it already
                s.stop()
        from analysis_server.redis_server import sync_client

        if not self.redis_url:
            return
        client = sync_client(self.redis_url)
        try:
            for p in self.prefixes:
                keys = list(client.scan_iter(match=f"{p}:*", count=1000))
                for i in range(0, len(keys), 1000):
                    client.delete(*keys[i:i + 1000])
        finally:
            client.close()


def stored_face(client, prefix: str, face_id: str) -> dict[str, bytes] | None:
    """What Redis holds for a live face (storage layout 2: one packed value in a record hash), as the
    fields of layout 1's hash: camera, t, identity, distance ("" when unmatched), base (as stored:
    sealed or not), track; ``None`` for an unknown, erased or expired face."""
    from analysis_server import records as rec
    from analysis_server.keys import Keys

    h = rec.face_hash(face_id)
    v = client.hget(Keys(prefix).records(rec.bucket_of(h)), h)
    if v is None or rec.is_tombstone(v) or rec.value_face_id(v) != face_id:
        return None
    r = rec.unpack_record(v)
    return {"camera": r.camera_id.encode(), "t": b"%d" % r.capture_ms, "identity": r.identity_id.encode(),
            "distance": repr(r.distance).encode() if r.distance is not None else b"", "base": r.base,
            "track": r.track_id.encode()}


def stored_face_ids(client, prefix: str) -> list[str]:
    """Every live face id in Redis under ``prefix`` (record hashes read whole), sorted."""
    from analysis_server import records as rec

    out = []
    for k in client.scan_iter(match=f"{prefix}:r:*", count=1000):
        out += [rec.value_face_id(v) for v in client.hvals(k) if not rec.is_tombstone(v)]
    return sorted(out)


@dataclass(frozen=True)
class SampleFace:
    person: str
    feature: np.ndarray
    base: bytes
    chip: np.ndarray


def observation(face_id: str, base: bytes, camera_id: str = "cam-1", t_ms: int | None = None,
                **fields) -> pb.FaceObservation:
    o = pb.FaceObservation(face_id=face_id, camera_id=camera_id, capture_time_ms=t_ms or int(time.time() * 1000),
                           box=pb.Box(x1=10, y1=20, x2=110, y2=140),
                           quality=pb.Quality(probability=0.99, face_size=100.0), base_layer=base, format_version=1,
                           feature_backend="dlib-resnet-128", track_id="track-1")
    for k, v in fields.items():
        setattr(o, k, v) if not isinstance(v, (pb.Box, pb.Quality)) else getattr(o, k).CopyFrom(v)
    return o


# -- a real edge-side gRPC client ----------------------------------------------------------------
@dataclass
class Edge:
    """One camera's stream, as an edge agent holds it; answers enhancement requests from ``textures``.

    ``mode``: "ok" (encode the held chip), "expired", "unknown", "silent" (never answer).
    """

    target: str
    camera_id: str = "cam-1"
    token: str | None = None
    textures: dict[str, tuple[np.ndarray, bytes]] = field(default_factory=dict)
    mode: str = "ok"

    def __post_init__(self):
        self.token = self.token if self.token is not None else TOKENS.get(self.camera_id, "")
        self.acks: queue.Queue = queue.Queue()
        self.drops: queue.Queue = queue.Queue()
        self.requests: queue.Queue = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.closed = threading.Event()
        self._out: queue.Queue = queue.Queue()
        self.channel = grpc.insecure_channel(self.target)
        stub = ingest_pb2_grpc.FaceIngestStub(self.channel)
        md = [("x-camera-id", self.camera_id), ("authorization", f"Bearer {self.token}")]
        self.call = stub.Stream(iter(self._out.get, None), metadata=md)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for msg in self.call:
                kind = msg.WhichOneof("kind")
                if kind == "ack":
                    self.acks.put(msg.ack)
                elif kind == "drop_texture":
                    for f in msg.drop_texture.face_ids:  # dropped, as an edge agent does
                        self.textures.pop(f, None)
                    self.drops.put(list(msg.drop_texture.face_ids))
                elif kind == "enhancement_request":
                    self.requests.put(msg.enhancement_request)
                    self._answer(msg.enhancement_request)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.closed.set()

    def _answer(self, req: pb.EnhancementRequest) -> None:
        from facecodec import enhancement

        up = pb.EnhancementUpload(request_id=req.request_id, face_id=req.face_id)
        if self.mode == "silent":
            return
        if self.mode == "expired":
            up.status, up.message = pb.UPLOAD_STATUS_EXPIRED, "spool cap reached"
        elif self.mode == "unknown" or req.face_id not in self.textures:
            up.status = pb.UPLOAD_STATUS_UNKNOWN_FACE
        else:
            chip, base = self.textures[req.face_id]
            up.status = pb.UPLOAD_STATUS_OK
            up.payload = enhancement.encode(chip, base, req.codec or "jpeg", req.quality or 75)
        self._out.put(pb.EdgeMessage(enhancement=up))

    def hello(self, version: str = "test-edge/1") -> None:
        self._out.put(pb.EdgeMessage(hello=pb.Hello(camera_id=self.camera_id, agent_version=version)))

    def send(self, *observations: pb.FaceObservation, timeout: float = 30) -> pb.Ack:
        """Send one batch and wait for its Ack."""
        self._out.put(pb.EdgeMessage(observations=pb.ObservationBatch(observations=observations)))
        return self.next_ack(timeout)

    def next_ack(self, timeout: float = 30) -> pb.Ack:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.acks.get(timeout=0.05)
            except queue.Empty:
                if self.closed.is_set():
                    raise AssertionError(f"stream closed: {self.error}")
        raise AssertionError("no ack within the timeout")

    def close(self) -> None:
        self._out.put(None)
        self.closed.wait(10)
        self.channel.close()
