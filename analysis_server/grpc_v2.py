"""The compact wire, ``facewire.v2.FaceIngest.Stream`` (``proto/facewire/v2/ingest.proto``).

Served beside v1 on the same port during the transition (edges of this release speak v2; an edge of an
earlier release keeps working on v1 until it is upgraded; v1 goes in a later release, see
proto/README.md). Everything after the wire is shared: a v2 batch is unpacked into the
``FaceObservation`` messages v1 carries (base layers rebuilt with the header the stream's ``Hello``
fixes and their checksum, face ids from the agent id and the sequence numbers) and handled by
:meth:`IngestServicer.handle_batches`, so validation, matching, storage and exactly-once are one code
path; what goes back is translated: an Ack names the last sequence number handled and the refused ones,
requests and texture drops name faces by sequence number.
"""

from __future__ import annotations

import logging

from analysis_server.edge_link import CONTEXT, FACE, CameraSession, LayerRequest
from analysis_server.grpc_service import IngestServicer
from analysis_server.validation import ValidationFailure
from facecodec import base_layer
from facecodec.frontend.features import BACKENDS
from facewire import ids
from facewire.v1 import ingest_pb2 as pb1
from facewire.v2 import ingest_pb2 as pb2
from facewire.v2 import ingest_pb2_grpc as pb2_grpc

log = logging.getLogger(__name__)

MAX_BODY = 4 * (128 + 2) * 4  # bytes: longer than any base-layer body of the registered models
V1_TO_V2_STATUS = {pb1.UPLOAD_STATUS_OK: pb2.UPLOAD_STATUS_OK, pb1.UPLOAD_STATUS_EXPIRED: pb2.UPLOAD_STATUS_EXPIRED,
                   pb1.UPLOAD_STATUS_UNKNOWN_FACE: pb2.UPLOAD_STATUS_UNKNOWN_FACE,
                   pb1.UPLOAD_STATUS_ERROR: pb2.UPLOAD_STATUS_ERROR, pb1.UPLOAD_STATUS_NO_LAYER: pb2.UPLOAD_STATUS_NO_LAYER}
LAYERS = {pb2.LAYER_CONTEXT: CONTEXT}  # the layers an edge may announce in Hello, besides the face's
LAYER_CODES = {CONTEXT: pb2.LAYER_CONTEXT}
V2_TO_V1_STATUS = {v: k for k, v in V1_TO_V2_STATUS.items()}


class StreamState:
    """What a v2 stream's Hello fixed (kept on its session as ``wire``)."""

    def __init__(self, hello: pb2.Hello, camera_id: str):
        if hello.camera_id and hello.camera_id != camera_id:
            raise ValidationFailure("hello", f"Hello names camera {hello.camera_id[:40]!r}, the stream {camera_id!r}")
        if len(hello.agent_id) != ids.AGENT_ID_BYTES:
            raise ValidationFailure("hello", f"agent_id is {ids.AGENT_ID_BYTES} bytes, not {len(hello.agent_id)}")
        backend = BACKENDS.get(hello.feature_backend)
        if backend is None:
            raise ValidationFailure("hello", f"unknown feature_backend {hello.feature_backend[:40]!r}")
        if not (0 < hello.base_format < 16 and hello.base_model_tag < 256 and hello.base_step < 16):
            raise ValidationFailure("hello", "base_format, base_model_tag or base_step out of range")
        self.agent_id = bytes(hello.agent_id)
        self.backend = hello.feature_backend
        self.format = hello.base_format
        self.header = bytes([base_layer.MAGIC | hello.base_format, (backend.code << 4) | hello.base_step,
                             hello.base_model_tag])
        self.seq_of: dict[str, int] = {}  # face id -> seq, of the faces of the batches being handled

    def face_id(self, seq: int) -> str:
        return ids.face_id(self.agent_id, seq)

    def payload(self, body: bytes) -> bytes:
        """The base-layer payload of ``body`` (the header from Hello; format 1's checksum computed)."""
        return base_layer.from_wire(self.header, body)


class CompactIngestServicer(IngestServicer):
    """``facewire.v2.FaceIngest.Stream``: v2 on the wire, the v1 servicer's handling behind it."""

    # -- inbound -------------------------------------------------------------------------------------
    async def _handle_other(self, msg: pb2.EdgeMessage, session: CameraSession) -> None:
        kind = msg.WhichOneof("kind")
        state: StreamState | None = session.wire
        if kind == "hello":
            session.wire = StreamState(msg.hello, session.camera_id)
            session.agent_version = msg.hello.agent_version[:64]
            session.layers = frozenset({FACE, *(LAYERS[x] for x in msg.hello.layers if x in LAYERS)})
            from analysis_server.store import now_ms

            await self.s.store.touch_camera(session.camera_id, agent_version=session.agent_version,
                                            last_seen_ms=now_ms())
        elif state is None:
            raise ValidationFailure("hello", "a facewire.v2 stream starts with Hello")
        elif kind == "enhancement":
            await self.handle_upload(from_v2_upload(msg.enhancement, session.requested), session)
        else:
            log.warning("camera %s sent an empty message; ignored", session.camera_id)

    async def handle_wire_batches(self, batches: list[pb2.ObservationBatch], session: CameraSession) -> None:
        state: StreamState | None = session.wire
        if state is None:
            raise ValidationFailure("hello", "a facewire.v2 stream starts with Hello")
        unpacked, through, refused = [], 0, []
        for batch in batches:
            obs, seqs, bad = unpack(batch, state, session.camera_id)
            unpacked.append(pb1.ObservationBatch(observations=obs))
            refused += bad
            through = max([through, *seqs, *(r.seq for r in bad)])
        acks = await self.handle_batches(unpacked, session)
        out = pb2.Ack(through=through)
        for r in refused:
            out.rejected.append(r)
        for ack in acks:
            for r in ack.rejected:
                seq = state.seq_of.get(r.face_id, 0)
                reason = r.reason.removeprefix(f"{r.field}: ") if r.field else r.reason
                out.rejected.add(seq=seq, field=r.field, reason=reason)
        state.seq_of.clear()
        await session.send(pb2.ServerMessage(ack=out))


    # -- outbound ------------------------------------------------------------------------------------
    def to_wire(self, msg, session: CameraSession):
        return to_v2(msg, session.wire, session.requested)


def _request(out: pb2.EnhancementRequest, face_id: str, state: StreamState | None,
             requested: dict[str, str]) -> pb2.ServerMessage:
    """A v2 request for one of the face's layers: the face named by its stream sequence number when
    the stream still knows it, else by its id; remembered until its upload answers it."""
    seq = seq_of(face_id, state)
    if seq:
        out.seq = seq
    else:
        out.face_id = face_id
    _remember(requested, out.request_id, face_id)
    return pb2.ServerMessage(enhancement_request=out)


def to_v2(msg, state: StreamState | None, requested: dict[str, str]) -> pb2.ServerMessage:
    """A server message (as the v1 code paths make them) in its facewire.v2 form; ``requested`` keeps
    request id -> face id until the answer comes (a v2 upload names only the request)."""
    if isinstance(msg, pb2.ServerMessage):
        return msg
    if isinstance(msg, LayerRequest):
        return _request(pb2.EnhancementRequest(request_id=msg.request_id, layer=LAYER_CODES[msg.layer]), msg.face_id,
                        state, requested)
    kind = msg.WhichOneof("kind")
    if kind == "enhancement_request":
        req = msg.enhancement_request
        return _request(pb2.EnhancementRequest(request_id=req.request_id, codec=req.codec, quality=req.quality),
                        req.face_id, state, requested)
    if kind == "drop_texture":
        out = pb2.DropTexture()
        for f in msg.drop_texture.face_ids:
            seq = seq_of(f, state)
            if seq:
                out.seq.append(seq)
            else:
                out.face_id.append(f)
        return pb2.ServerMessage(drop_texture=out)
    raise TypeError(f"no facewire.v2 form for a {kind} message")


def _remember(requested: dict[str, str], request_id: str, face_id: str) -> None:
    requested[request_id] = face_id
    if len(requested) > 4096:  # answers that never came: forget the oldest
        requested.pop(next(iter(requested)))


def from_v2_upload(up: pb2.EnhancementUpload, requested: dict[str, str]) -> pb1.EnhancementUpload:
    """An edge's v2 upload in the form the v1 code paths handle."""
    return pb1.EnhancementUpload(request_id=up.request_id, face_id=requested.pop(up.request_id, ""),
                                 status=V2_TO_V1_STATUS.get(up.status, 0), payload=up.payload, message=up.message)


def seq_of(face_id: str, state: StreamState | None) -> int:
    """The seq naming ``face_id`` on this stream (0: a face of another agent, or a v1 face)."""
    parts = ids.split(face_id)
    if parts is None or state is None or parts[0] != state.agent_id:
        return 0
    return parts[1]


def add_compact_servicer(services, server) -> None:
    pb2_grpc.add_FaceIngestServicer_to_server(CompactIngestServicer(services), server)


def unpack(batch: pb2.ObservationBatch, state: StreamState, camera_id: str
           ) -> tuple[list[pb1.FaceObservation], list[int], list[pb2.Rejection]]:
    """The batch's faces as v1 observations, every seq it names, and its refusals (a batch whose
    columns disagree in length is refused whole, each of its seqs named)."""
    n = len(batch.seq)
    seqs, s = [], 0
    for d in batch.seq:
        s += d
        seqs.append(s)
    legacy_seqs = list(batch.legacy_seq)
    columns = {"capture_ms": len(batch.capture_ms), "probability": len(batch.probability),
               "track": len(batch.track), "body_length": len(batch.body_length), "box": len(batch.box) // 4}
    if any(v != n for v in columns.values()) or len(batch.box) != 4 * n or \
            sum(batch.body_length) != len(batch.bodies) or len(legacy_seqs) != len(batch.legacy):
        why = "the batch's columns do not have one entry per face (4 for box) or bodies do not add up"
        return [], seqs + legacy_seqs, [pb2.Rejection(seq=q, field="batch", reason=why) for q in seqs + legacy_seqs]
    out: list[pb1.FaceObservation] = []
    refused: list[pb2.Rejection] = []
    t, at, previous = 0, 0, 0
    x = y = w = h = 0
    for i in range(n):
        t += batch.capture_ms[i]
        dx, dy, dw, dh = batch.box[4 * i : 4 * i + 4]
        x, y, w, h = x + dx, y + dy, w + dw, h + dh
        length = batch.body_length[i]
        body = batch.bodies[at : at + length]
        at += length
        seq = seqs[i]
        if seq <= previous or seq >= 1 << 64:
            refused.append(pb2.Rejection(seq=seq, field="seq", reason="sequence numbers increase within a batch"))
            continue
        previous = seq
        if not 0 <= length <= MAX_BODY:  # format 2 writes no byte for a feature at every lowest symbol
            refused.append(pb2.Rejection(seq=seq, field="base_layer", reason=f"a body of {length} bytes"))
            continue
        if min(x, y) < 0 or min(w, h) <= 0:
            refused.append(pb2.Rejection(seq=seq, field="box", reason=f"box {x},{y} {w}x{h} is not in the frame"))
            continue
        track = batch.track[i]
        if track >= seq:
            refused.append(pb2.Rejection(seq=seq, field="track", reason="a track starts at an earlier seq"))
            continue
        face_id = state.face_id(seq)
        state.seq_of[face_id] = seq
        out.append(pb1.FaceObservation(
            face_id=face_id, camera_id=camera_id, capture_time_ms=t,
            box=pb1.Box(x1=x, y1=y, x2=x + w, y2=y + h),
            quality=pb1.Quality(probability=min(batch.probability[i], 1000) / 100.0, face_size=min(w, h)),
            base_layer=state.payload(body), format_version=state.format, feature_backend=state.backend,
            track_id=state.face_id(seq - track)))
    for seq, o in zip(legacy_seqs, batch.legacy):
        state.seq_of[o.face_id] = seq
        out.append(o)
    return out, seqs + legacy_seqs, refused
