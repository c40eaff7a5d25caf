"""The camera's stream to the analysis server (``facewire.v2.FaceIngest/Stream``, the compact wire).

One bidirectional stream per camera, authenticated with the camera's token in the metadata.
The spool is the only source of what to send: a session opens with ``Hello`` (the camera, this
agent's id and the base-layer header every observation shares), then sends every spooled
observation of its camera in order, in batches of packed columns, and keeps following the spool
as new observations arrive; the server's ``Ack`` names the last sequence number it handled and the
spool forgets everything up to it. When the stream fails, or no ack comes for ``ack_timeout_s``
while some are due, the session ends and a new one starts after an exponential backoff with
jitter, replaying what is still spooled (sequence numbers, hence face ids, make replays harmless).
Observations spooled before the compact wire, or with another base-layer header, travel whole in
the batch's ``legacy`` list. ``EnhancementRequest`` is answered from the texture store,
``DropTexture`` deletes texture.

A batch waits up to ``batch_linger_s`` for more faces: every message costs about 30 bytes of
framing each way (gRPC, HTTP/2, the Ack), about 12 bytes per face do not, so the envelope per face
falls with the faces per batch (bench/results/edge.json); the linger is how long a face may wait.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import grpc

from edge_agent.errors import StoreError
from edge_agent.settings import CameraConfig, EdgeSettings, TlsConfig
from edge_agent.sources import Backoff
from edge_agent.spool import Spool
from edge_agent.status import Counters
from edge_agent.texture import Lookup, TextureStore
from facecodec import base_layer
from facecodec.errors import FaceCodecError
from facewire.v1 import ingest_pb2 as pb
from facewire.v2 import ingest_pb2 as pb2
from facewire.v2 import ingest_pb2_grpc as pb2_grpc

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# A refused token will not become right by itself: after one, the backoff jumps to this attempt (its
# delay is then backoff_max_s), so a misconfigured camera asks about twice a minute, not ten times a second.
AUTH_BACKOFF_ATTEMPT = 30


@dataclass
class StreamConfig:
    """What one camera's stream needs to know: made from the agent's settings by :meth:`for_camera`
    (the defaults are the settings' own, in edge_agent/settings.py, and nowhere else)."""

    target: str
    camera_id: str
    token: str
    batch_size: int
    batch_linger_s: float
    max_in_flight: int
    ack_timeout_s: float
    backoff_initial_s: float
    backoff_max_s: float
    enhancement_codec: str
    enhancement_quality: int
    tls: TlsConfig | None  # None: plaintext
    feature_backend: str
    base_header: bytes  # the 3 header bytes of this agent's base-layer payloads (see Hello)

    @classmethod
    def for_camera(cls, settings: EdgeSettings, camera: CameraConfig, **overrides) -> StreamConfig:
        """The stream of ``camera`` as ``settings`` say (``overrides``: fields set otherwise, for tests)."""
        s = settings
        backend = s.feature_backend or _codec_settings().feature_backend
        config = dict(
            target=s.server, camera_id=camera.id, token=s.token_for(camera), batch_size=s.batch_size,
            batch_linger_s=s.batch_linger_ms / 1000, max_in_flight=s.max_in_flight, ack_timeout_s=s.ack_timeout_s,
            backoff_initial_s=s.backoff_initial_s, backoff_max_s=s.backoff_max_s,
            enhancement_codec=s.enhancement_codec, enhancement_quality=s.enhancement_quality, tls=s.channel_tls(),
            feature_backend=backend, base_header=_base_header(backend))
        return cls(**{**config, **overrides})


def _codec_settings():
    from facecodec.settings import get_settings

    return get_settings()


def _base_header(backend: str) -> bytes:
    """The header of the base layers this agent writes (the stream's Hello says it once); a made-up one
    when no model is registered (every observation then travels whole, as a legacy one)."""
    from facecodec import base_layer
    from facecodec.errors import FaceCodecError

    try:
        codec = base_layer.get_codec(backend)
        return base_layer.header_bytes(codec.model, codec.step_index)
    except FaceCodecError:
        return b"\xb1\x10\x00"


def open_channel(target: str, tls: TlsConfig | None, options: list | None = None) -> grpc.Channel:
    """A channel to ``target``: TLS checked against ``tls.root_ca`` (or the system's roots), or plaintext."""
    options = list(options or [])
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    creds = grpc.ssl_channel_credentials(root_certificates=tls.root_ca, private_key=tls.private_key,
                                         certificate_chain=tls.cert_chain)
    return grpc.secure_channel(target, creds, options=options)


@dataclass
class _Session:
    uploads: queue.Queue = field(default_factory=queue.Queue)
    in_flight: dict[int, float] = field(default_factory=dict)  # seq -> time sent
    last_seq: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    acked: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    call: object = None


def _quality_for(codec: str, default_codec: str, default_quality: int) -> int:
    """The quality used when a request names none: the configured one for the configured codec;
    for a learned codec (whose qualities are its registered rate points) the middle rate point."""
    from facecodec.image_codecs import LearnedCodec, image_codec

    c = image_codec(codec)
    if isinstance(c, LearnedCodec) and codec != default_codec and c.qualities:
        return c.qualities[len(c.qualities) // 2]
    return default_quality


def answer_enhancement(req: pb.EnhancementRequest, texture: TextureStore, default_codec: str,
                       default_quality: int) -> pb.EnhancementUpload:
    """The upload answering ``req``: OK with the payload, EXPIRED, UNKNOWN_FACE or ERROR. Never raises."""
    out = pb.EnhancementUpload(request_id=req.request_id, face_id=req.face_id)
    try:
        tex = texture.get(req.face_id)
        if tex.status is Lookup.UNKNOWN:
            out.status, out.message = pb.UPLOAD_STATUS_UNKNOWN_FACE, tex.reason
        elif tex.status is Lookup.EXPIRED:
            out.status, out.message = pb.UPLOAD_STATUS_EXPIRED, tex.reason
        else:
            from facecodec import enhancement

            codec = req.codec or default_codec
            out.payload = enhancement.encode(tex.crop, tex.base, codec, req.quality or _quality_for(codec, default_codec,
                                                                                                default_quality))
            out.status = pb.UPLOAD_STATUS_OK
    except (FaceCodecError, ValueError) as e:  # a codec or quality this edge cannot code
        log.warning("enhancement request %s for face %s refused: %s", req.request_id, req.face_id, e)
        out.status, out.message = pb.UPLOAD_STATUS_ERROR, f"{type(e).__name__}: {e}"
    except Exception as e:  # the server must always get an answer, whatever went wrong here
        log.exception("enhancement request %s for face %s failed", req.request_id, req.face_id)
        out.status, out.message = pb.UPLOAD_STATUS_ERROR, f"{type(e).__name__}: {e}"
    return out


def answer_context(request_id: str, face_id: str, texture: TextureStore) -> pb2.EnhancementUpload:
    """The upload answering a request for a face's context picture (kept, coded, when the face was
    sent): OK with the context payload, NO_LAYER when none was kept, EXPIRED, UNKNOWN_FACE or ERROR.
    Never raises."""
    out = pb2.EnhancementUpload(request_id=request_id)
    try:
        tex = texture.get(face_id, context=True)
        if tex.status is Lookup.UNKNOWN:
            out.status, out.message = pb2.UPLOAD_STATUS_UNKNOWN_FACE, tex.reason
        elif tex.status is Lookup.EXPIRED:
            out.status, out.message = pb2.UPLOAD_STATUS_EXPIRED, tex.reason
        elif tex.context is None:
            out.status, out.message = pb2.UPLOAD_STATUS_NO_LAYER, (
                "this edge kept no context picture of the face (EDGE_CONTEXT__ENABLED was off, or an older "
                "agent stored it)")
        else:
            out.status, out.payload = pb2.UPLOAD_STATUS_OK, tex.context
    except Exception as e:  # the server must always get an answer, whatever went wrong here
        log.exception("context request %s for face %s failed", request_id, face_id)
        out.status, out.message = pb2.UPLOAD_STATUS_ERROR, f"{type(e).__name__}: {e}"
    return out


class CameraStream:
    """Keeps one camera's stream up and the spool flowing into it, until :meth:`stop`."""

    def __init__(self, config: StreamConfig, spool: Spool, texture: TextureStore, counters: Counters,
                 executor: Executor):
        self.config = config
        self.spool = spool
        self.texture = texture
        self.counters = counters
        self.executor = executor
        self.connected = False
        self._stop = threading.Event()
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self.backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"stream-{self.config.camera_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        s = self._session
        if s is not None:
            s.closed.set()
            if s.call is not None:
                s.call.cancel()
        self.spool.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                self.counters.inc("reconnects")
            first = False
            code = self._run_session()
            if self._stop.is_set():
                break
            if code in AUTH_CODES:
                self.backoff.attempt = max(self.backoff.attempt, AUTH_BACKOFF_ATTEMPT)
            delay = self.backoff.next_delay()
            log.info("camera %s: reconnecting in %.1f s", self.config.camera_id, delay)
            self._stop.wait(delay)

    # -- one session -------------------------------------------------------------------------
    def _run_session(self) -> grpc.StatusCode | None:
        c = self.config
        session = _Session()
        self._session = session
        metadata = (("authorization", f"Bearer {c.token}"), ("x-camera-id", c.camera_id))
        options = [
            ("grpc.initial_reconnect_backoff_ms", int(c.backoff_initial_s * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(c.backoff_initial_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(c.backoff_max_s * 1000)),
        ]
        code = None
        with open_channel(c.target, c.tls, options) as channel:
            call = pb2_grpc.FaceIngestStub(channel).Stream(self._requests(session), metadata=metadata)
            session.call = call
            if self._stop.is_set():
                call.cancel()
            try:
                for msg in call:
                    self._handle(session, msg)
            except grpc.RpcError as e:
                code = e.code()
                if code in AUTH_CODES:
                    log.error("camera %s: the server refused its credentials (%s: %s); check the camera token",
                              c.camera_id, code.name, e.details())
                elif code == grpc.StatusCode.CANCELLED and (self._stop.is_set() or session.closed.is_set()):
                    pass
                else:
                    log.warning("camera %s: stream to %s ended: %s %s", c.camera_id, c.target, code.name, e.details())
            else:
                log.warning("camera %s: the server closed the stream", c.camera_id)
            finally:
                session.closed.set()
                call.cancel()
                if self.connected:
                    self.connected = False
        if session.acked:
            self.backoff.reset()
        return code

    def hello(self) -> pb2.Hello:
        c = self.config
        head = c.base_header
        return pb2.Hello(camera_id=c.camera_id, agent_version=AGENT_VERSION, agent_id=self.spool.agent_id,
                         feature_backend=c.feature_backend, base_format=head[0] & 0x0F, base_model_tag=head[2],
                         base_step=head[1] & 0x0F, layers=[pb2.LAYER_CONTEXT])

    def _requests(self, session: _Session):
        """What the session sends: Hello, then spooled observations and enhancement uploads."""
        c = self.config
        yield pb2.EdgeMessage(hello=self.hello())
        while not session.closed.is_set():
            gen = self.spool.generation
            try:
                yield pb2.EdgeMessage(enhancement=session.uploads.get_nowait())
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            if session.in_flight and now - session.last_progress > c.ack_timeout_s:
                log.warning("camera %s: no ack for %.0f s with %d observations due; reconnecting",
                            c.camera_id, now - session.last_progress, len(session.in_flight))
                session.closed.set()
                if session.call is not None:
                    session.call.cancel()
                return
            room = c.max_in_flight - len(session.in_flight)
            rows = self.spool.pending(c.camera_id, session.last_seq, min(c.batch_size, room)) if room > 0 else []
            if rows and len(rows) < c.batch_size and c.batch_linger_s > 0 and room >= c.batch_size:
                deadline = now + c.batch_linger_s
                while len(rows) < c.batch_size and time.monotonic() < deadline and not session.closed.is_set():
                    gen = self.spool.wait_for_change(gen, deadline - time.monotonic())
                    rows = self.spool.pending(c.camera_id, session.last_seq, c.batch_size)
            if rows:
                batch = pack(rows, c.base_header, c.camera_id, self.spool.face_id)
                for r in rows:
                    session.in_flight[r.seq] = now
                if len(session.in_flight) == len(rows):
                    session.last_progress = now  # the ack clock starts with the first observation due
                session.last_seq = rows[-1].seq
                self.counters.inc("sent", len(rows))
                yield pb2.EdgeMessage(observations=batch)
                continue
            self.spool.wait_for_change(gen, 0.5)

    def _handle(self, session: _Session, msg: pb2.ServerMessage) -> None:
        kind = msg.WhichOneof("kind")
        if not self.connected:
            self.connected = True
            log.info("camera %s: streaming to %s", self.config.camera_id, self.config.target)
        if kind == "ack":
            self._on_ack(session, msg.ack)
        elif kind == "enhancement_request":
            self.executor.submit(self._answer, session, msg.enhancement_request)
        elif kind == "drop_texture":
            try:
                drop = msg.drop_texture
                n = self.texture.drop([self.spool.face_id(q) for q in drop.seq] + list(drop.face_id))
                log.info("camera %s: dropped the texture of %d faces at the server's request", self.config.camera_id, n)
            except StoreError as e:
                self.counters.inc("store_errors")
                log.error("camera %s: %s", self.config.camera_id, e)
        else:
            log.warning("camera %s: ignoring an unknown server message", self.config.camera_id)

    def _on_ack(self, session: _Session, ack: pb2.Ack) -> None:
        for r in ack.rejected:
            log.warning("camera %s: server rejected observation %d (%s): %s", self.config.camera_id, r.seq, r.field,
                        r.reason)
        rejected = sum(1 for r in ack.rejected if r.seq)
        try:
            removed = self.spool.ack_through(self.config.camera_id, ack.through)
        except StoreError as e:
            self.counters.inc("store_errors")
            log.error("camera %s: %s", self.config.camera_id, e)
            return
        done = [q for q in session.in_flight if q <= ack.through]
        for q in done:
            del session.in_flight[q]
        session.last_progress = time.monotonic()
        session.acked += len(done)
        self.counters.inc("acknowledged", max(0, removed - rejected))
        self.counters.inc("rejected", min(rejected, removed))

    def _answer(self, session: _Session, req: pb2.EnhancementRequest) -> None:
        face_id = self.spool.face_id(req.seq) if req.seq else req.face_id
        if req.layer == pb2.LAYER_CONTEXT:
            up = answer_context(req.request_id, face_id, self.texture)
        else:
            v1 = pb.EnhancementRequest(request_id=req.request_id, face_id=face_id, codec=req.codec,
                                       quality=req.quality)
            up = answer_enhancement(v1, self.texture, self.config.enhancement_codec, self.config.enhancement_quality)
        name = pb2.UploadStatus.Name(up.status).removeprefix("UPLOAD_STATUS_").lower()
        self.counters.inc(f"uploads_{'unknown' if name == 'unknown_face' else name}")
        if session.closed.is_set():
            log.info("camera %s: stream closed before the answer to request %s could be sent",
                     self.config.camera_id, req.request_id)
            return
        session.uploads.put(pb2.EnhancementUpload(request_id=up.request_id, status=int(up.status), payload=up.payload,
                                                  message=up.message))
        self.spool.wake()


def pack(rows, base_header: bytes, camera_id: str, face_id) -> pb2.ObservationBatch:
    """Spooled observations as one facewire.v2 batch: faces whose base layer has the stream's header as
    packed columns, the others (v1 rows, another header) whole in ``legacy``."""
    from edge_agent.spool import V2

    batch = pb2.ObservationBatch()
    bodies = []
    last_seq = last_ms = 0
    last_box = (0, 0, 0, 0)
    for r in rows:
        if r.format == V2:
            f = pb2.SpooledFace.FromString(r.data)
            if f.base_layer[:3] == base_header:
                batch.seq.append(r.seq - last_seq)
                batch.capture_ms.append(f.capture_ms - last_ms)
                box = (f.x, f.y, f.width, f.height)
                batch.box.extend(v - p for v, p in zip(box, last_box))
                last_box = box
                batch.probability.append(f.probability)
                batch.track.append(r.seq - f.track_seq)
                body = base_layer.wire_body(f.base_layer)
                bodies.append(body)
                batch.body_length.append(len(body))
                last_seq, last_ms = r.seq, f.capture_ms
                continue
            legacy = v1_observation(f, face_id(r.seq), camera_id, face_id(f.track_seq))
        else:
            legacy = pb.FaceObservation.FromString(r.data)
        batch.legacy.append(legacy)
        batch.legacy_seq.append(r.seq)
    batch.bodies = b"".join(bodies)
    return batch


def v1_observation(f: pb2.SpooledFace, face_id: str, camera_id: str, track_id: str) -> pb.FaceObservation:
    """A spooled face as a whole v1 observation (for ``legacy``)."""
    from facecodec.frontend.features import BACKEND_CODES

    return pb.FaceObservation(
        face_id=face_id, camera_id=camera_id, capture_time_ms=f.capture_ms,
        box=pb.Box(x1=f.x, y1=f.y, x2=f.x + f.width, y2=f.y + f.height),
        quality=pb.Quality(probability=f.probability / 100.0, face_size=min(f.width, f.height)),
        base_layer=f.base_layer, format_version=f.base_layer[0] & 0x0F if f.base_layer else 0,
        feature_backend=BACKEND_CODES.get(f.base_layer[1] >> 4, "") if len(f.base_layer) > 1 else "",
        track_id=track_id)
