"""The compact wire (facewire.v2) over a real channel into a real Redis: Hello first, packed columns,
face ids from the agent id and sequence numbers, acks by sequence, replays stored once, refusals named
by seq and field, legacy observations inside a v2 batch, requests and drops by seq, and the envelope per
face of a full batch (a property of the format, measured on its bytes)."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import numpy as np
import pytest
from server_testkit import TOKENS, observation, stored_face, stored_face_ids

from analysis_server.keys import Keys
from edge_agent.client import pack
from edge_agent.spool import V2, SpooledObservation
from facecodec import base_layer
from facewire import ids
from facewire.v2 import ingest_pb2 as pb2
from facewire.v2 import ingest_pb2_grpc

pytestmark = pytest.mark.slow
AGENT = bytes.fromhex("00c0ffee00c0ffee")


class V2Edge:
    """A raw facewire.v2 stream."""

    def __init__(self, target: str, camera_id: str = "cam-1", hello: bool = True, header: bytes | None = None):
        self.camera_id = camera_id
        self.acks: queue.Queue = queue.Queue()
        self.requests: queue.Queue = queue.Queue()
        self.drops: queue.Queue = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.closed = threading.Event()
        self._out: queue.Queue = queue.Queue()
        self.channel = grpc.insecure_channel(target)
        md = [("x-camera-id", camera_id), ("authorization", f"Bearer {TOKENS[camera_id]}")]
        self.call = ingest_pb2_grpc.FaceIngestStub(self.channel).Stream(iter(self._out.get, None), metadata=md)
        threading.Thread(target=self._read, daemon=True).start()
        self.header = header
        if hello:
            self.send_hello()

    def send_hello(self) -> None:
        h = self.header
        self._out.put(pb2.EdgeMessage(hello=pb2.Hello(
            camera_id=self.camera_id, agent_id=AGENT, feature_backend="dlib-resnet-128", base_format=h[0] & 0x0F,
            base_model_tag=h[2], base_step=h[1] & 0x0F)))

    def _read(self) -> None:
        try:
            for msg in self.call:
                kind = msg.WhichOneof("kind")
                {"ack": self.acks, "enhancement_request": self.requests, "drop_texture": self.drops}[kind].put(
                    getattr(msg, kind))
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.closed.set()

    def put(self, msg: pb2.EdgeMessage) -> None:
        self._out.put(msg)

    def send(self, batch: pb2.ObservationBatch, timeout: float = 20) -> pb2.Ack:
        self._out.put(pb2.EdgeMessage(observations=batch))
        return self.acks.get(timeout=timeout)

    def close(self) -> None:
        self._out.put(None)
        self.channel.close()


def faces(samples, first_seq: int, n: int, track_from: int | None = None) -> list[SpooledObservation]:
    now = int(time.time() * 1000)
    rows = []
    for i in range(n):
        seq = first_seq + 2 * i  # not contiguous: an agent's other cameras take seqs too
        f = pb2.SpooledFace(capture_ms=now + 100 * i, x=40 + i, y=30, width=100, height=120, probability=99,
                            track_seq=track_from or seq, base_layer=samples[i % len(samples)].base)
        rows.append(SpooledObservation(seq, ids.face_id(AGENT, seq), f.SerializeToString(), V2))
    return rows


@pytest.fixture
def v2(server, samples):
    made = []

    def connect(camera_id: str = "cam-1", **kw) -> V2Edge:
        e = V2Edge(server.grpc_target, camera_id, header=samples[0].base[:3], **kw)
        made.append(e)
        return e

    yield connect
    for e in made:
        e.close()


def test_a_batch_of_columns_is_stored_under_ids_made_of_agent_and_seq(server, v2, samples, redis_client):
    edge = v2()
    rows = faces(samples, 1001, 5)
    ack = edge.send(pack(rows, samples[0].base[:3], "cam-1", lambda q: ids.face_id(AGENT, q)))
    assert ack.through == rows[-1].seq and not ack.rejected
    keys = Keys(server.settings.key_prefix)
    for i, r in enumerate(rows):
        h = stored_face(redis_client, keys.prefix, r.face_id)
        assert h["camera"] == b"cam-1" and h["base"] == samples[i].base  # header and checksum rebuilt
        assert r.face_id == f"00c0ffee00c0ffee{r.seq:016x}"
        np.testing.assert_allclose(server.call(server.services.store.get(r.face_id)).feature,
                                   base_layer.decode(samples[i].base).feature, atol=1e-6)


def test_a_replay_is_acknowledged_again_and_stored_once(server, v2, samples, redis_client):
    edge = v2()
    rows = faces(samples, 2001, 3)
    batch = pack(rows, samples[0].base[:3], "cam-1", lambda q: ids.face_id(AGENT, q))
    assert edge.send(batch).through == rows[-1].seq
    edge.close()
    again = v2()  # a reconnect replays what it had not seen acknowledged
    assert again.send(batch).through == rows[-1].seq
    assert len(stored_face_ids(redis_client, server.settings.key_prefix)) == 3
    assert server.services.metrics.observations.labels("duplicate")._value.get() == 3


def test_tracks_are_named_by_their_first_observation(server, v2, samples, api):
    edge = v2()
    rows = faces(samples, 3001, 3, track_from=3001)
    edge.send(pack(rows, samples[0].base[:3], "cam-1", lambda q: ids.face_id(AGENT, q)))
    listed = api.get("/faces?camera=cam-1").json()["items"]
    assert {f["track_id"] for f in listed} == {ids.face_id(AGENT, 3001)}


def test_a_stream_that_does_not_start_with_hello_is_ended_invalid_argument(server, v2, samples):
    edge = v2(hello=False)
    edge.put(pb2.EdgeMessage(observations=pack(faces(samples, 1, 1), samples[0].base[:3], "cam-1", str)))
    assert edge.closed.wait(20)
    assert edge.error.code() == grpc.StatusCode.INVALID_ARGUMENT and "Hello" in edge.error.details()


def test_bad_faces_are_refused_by_seq_and_field_and_the_rest_is_stored(server, v2, samples, redis_client):
    edge = v2()
    rows = faces(samples, 4001, 3)
    batch = pack(rows, samples[0].base[:3], "cam-1", lambda q: ids.face_id(AGENT, q))
    batch.box[4 * 1 + 2] -= 10_000  # the second face: a negative width (boxes are deltas: the third keeps its own)
    batch.box[4 * 2 + 2] += 10_000
    ack = edge.send(batch)
    assert ack.through == rows[-1].seq
    assert [(r.seq, r.field) for r in ack.rejected] == [(rows[1].seq, "box")]
    keys = Keys(server.settings.key_prefix)
    assert stored_face(redis_client, keys.prefix, rows[0].face_id) and \
        not stored_face(redis_client, keys.prefix, rows[1].face_id)


def test_a_batch_whose_columns_disagree_is_refused_whole(server, v2, samples):
    edge = v2()
    rows = faces(samples, 5001, 3)
    batch = pack(rows, samples[0].base[:3], "cam-1", lambda q: ids.face_id(AGENT, q))
    del batch.probability[-1]
    ack = edge.send(batch)
    assert ack.through == rows[-1].seq and {r.seq for r in ack.rejected} == {r.seq for r in rows}
    assert all(r.field == "batch" for r in ack.rejected)


def test_legacy_observations_travel_whole_in_a_v2_batch(server, v2, samples, redis_client):
    edge = v2()
    batch = pb2.ObservationBatch()
    batch.legacy.append(observation("old-uuid-face", samples[0].base))
    batch.legacy_seq.append(7)
    ack = edge.send(batch)
    assert ack.through == 7 and not ack.rejected
    assert stored_face(redis_client, server.settings.key_prefix, "old-uuid-face")


def test_requests_and_drops_name_faces_by_seq(server, v2, samples, api):
    edge = v2()
    rows = faces(samples, 6001, 2)
    edge.send(pack(rows, samples[0].base[:3], "cam-1", lambda q: ids.face_id(AGENT, q)))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", api.get(f"/faces/{rows[0].face_id}/image?layer=full")))
    t.start()
    req = edge.requests.get(timeout=20)
    assert req.seq == rows[0].seq and not req.face_id
    edge.put(pb2.EdgeMessage(enhancement=pb2.EnhancementUpload(request_id=req.request_id,
                                                               status=pb2.UPLOAD_STATUS_EXPIRED, message="gone")))
    t.join(30)
    assert result["r"].status_code == 410
    assert api.delete(f"/faces/{rows[1].face_id}").status_code == 200
    drop = edge.drops.get(timeout=20)
    assert list(drop.seq) == [rows[1].seq] and not drop.face_id


def test_a_full_batch_costs_at_most_16_bytes_per_face_besides_the_base_layer(samples):
    """The format's own bytes: 64 faces of one track drifting across a 720p frame, about a second apart."""
    rows = faces(samples, 10_001, 64)
    batch = pack(rows, samples[0].base[:3], "cam-1", lambda q: ids.face_id(AGENT, q))
    message = pb2.EdgeMessage(observations=batch).SerializeToString()
    framing = 5 + 9  # gRPC's length prefix and an HTTP/2 DATA frame header
    ack = pb2.ServerMessage(ack=pb2.Ack(through=rows[-1].seq)).SerializeToString()
    envelope = (len(message) + framing + len(ack) + framing - len(batch.bodies)) / len(rows)
    assert envelope <= 16, envelope
