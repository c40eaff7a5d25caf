"""The camera stream's protocol against a scripted gRPC peer on loopback: auth, batching, acks,
replays after reconnecting, ack timeouts, enhancement answers and texture drops."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edge_agent.client import CameraStream, StreamConfig
from edge_agent.settings import EdgeSettings
from edge_agent.spool import Spool
from edge_agent.status import Counters
from edge_agent.texture import TextureStore
from facewire.v1 import ingest_pb2 as pb
from testkit.processes import free_port, wait_until


class Rig:
    def __init__(self, tmp_path, port: int, token: str = "secret", **config):
        self.spool = Spool(tmp_path / "spool.sqlite3", 1 << 24)
        self.texture = TextureStore(tmp_path / "texture.sqlite3", 1 << 24, 3600)
        self.counters = Counters()
        self.executor = ThreadPoolExecutor(1)
        settings = EdgeSettings(server=f"127.0.0.1:{port}", token=token, cameras=[{"id": "cam-1", "source": "0"}],
                                data_dir=tmp_path / "edge", batch_size=8, batch_linger_ms=20, backoff_initial_s=0.05,
                                backoff_max_s=0.3)
        cfg = StreamConfig.for_camera(settings, settings.cameras[0], **config)
        self.stream = CameraStream(cfg, self.spool, self.texture, self.counters, self.executor)

    def spool_faces(self, n: int, start: int = 0, camera: str = "cam-1") -> list[str]:
        ids = []
        for i in range(start, start + n):
            fid = f"face-{i:05d}"
            obs = pb.FaceObservation(face_id=fid, camera_id=camera, base_layer=b"\xb1" + bytes(39), track_id="t")
            self.spool.put(camera, fid, obs.SerializeToString())
            ids.append(fid)
        return ids

    def close(self):
        self.stream.stop()
        self.executor.shutdown()


@pytest.fixture
def rig_factory(tmp_path):
    rigs = []

    def make(port, **kw):
        r = Rig(tmp_path, port, **kw)
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.close()


def test_spooled_faces_are_sent_in_batches_with_auth_and_acked(peer, rig_factory):
    rig = rig_factory(peer.port)
    ids = rig.spool_faces(20)
    rig.stream.start()
    wait_until(lambda: len(rig.spool) == 0, what="acks")
    assert sorted(peer.stored) == ids and len(peer.received) == 20
    assert max(peer.batches) <= 8
    assert peer.hellos[0].camera_id == "cam-1"
    assert peer.metadata[0]["authorization"] == "Bearer secret" and peer.metadata[0]["x-camera-id"] == "cam-1"
    assert rig.counters["acknowledged"] == 20 and rig.counters["sent"] == 20
    more = rig.spool_faces(5, start=20)  # new faces keep flowing on the same stream
    wait_until(lambda: len(rig.spool) == 0, what="acks of new faces")
    assert sorted(peer.stored) == ids + more and len(peer.metadata) == 1


def test_agent_started_before_the_server_catches_up(rig_factory, make_peer):
    port = free_port()
    rig = rig_factory(port)
    ids = rig.spool_faces(12)
    rig.stream.start()
    time.sleep(0.8)
    assert rig.counters["reconnects"] >= 1 and len(rig.spool) == 12
    late = make_peer(port)
    wait_until(lambda: len(rig.spool) == 0, what="catch-up")
    assert sorted(late.stored) == ids


def test_unacked_faces_are_replayed_after_the_server_restarts(rig_factory, make_peer):
    port = free_port()
    first = make_peer(port, ack=False)  # receives, stores, never acknowledges, then dies
    rig = rig_factory(port)
    ids = rig.spool_faces(10)
    rig.stream.start()
    wait_until(lambda: len(first.received) == 10, what="first delivery")
    first.stop()
    second = make_peer(port)
    wait_until(lambda: len(rig.spool) == 0, what="replay")
    assert sorted(second.stored) == ids  # the same face ids: the server stores each once


def test_no_ack_within_the_timeout_reconnects_and_replays(peer, rig_factory):
    peer.ack = False
    rig = rig_factory(peer.port, ack_timeout_s=0.5)
    ids = rig.spool_faces(4)
    rig.stream.start()
    wait_until(lambda: len(peer.received) == 4, what="first delivery")
    peer.ack = True
    wait_until(lambda: len(rig.spool) == 0, what="replay after the ack timeout")
    assert len(peer.metadata) >= 2 and peer.received.count(ids[0]) >= 2
    assert rig.counters["reconnects"] >= 1


def test_a_wrong_token_is_retried_slowly_and_nothing_is_lost(peer, rig_factory):
    rig = rig_factory(peer.port, token="wrong", backoff_max_s=0.2)
    rig.spool_faces(3)
    rig.stream.start()
    wait_until(lambda: len(peer.metadata) >= 2, what="a retry")
    assert peer.stored == {} and len(rig.spool) == 3


def test_enhancement_requests_get_ok_expired_or_unknown(peer, rig_factory):
    from facecodec import enhancement

    rig = rig_factory(peer.port)
    chip = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    base = _base_payload()
    rig.texture.put("kept", chip, base)
    rig.texture.put("gone", chip, base)
    rig.texture.drop(["gone"])
    rig.stream.start()
    for rid, fid, codec in [("r1", "kept", "jpeg"), ("r2", "gone", ""), ("r3", "never-seen", ""),
                            ("r4", "kept", "no-such-codec")]:
        peer.outbox.put(pb.ServerMessage(enhancement_request=pb.EnhancementRequest(
            request_id=rid, face_id=fid, codec=codec, quality=90)))
    got = {}
    while len(got) < 4:
        up = peer.uploads.get(timeout=15)
        got[up.request_id] = up
    assert got["r1"].status == pb.UPLOAD_STATUS_OK and got["r1"].face_id == "kept"
    assert enhancement.read_header(got["r1"].payload).quality == 90
    decoded = enhancement.decode(got["r1"].payload, base)
    assert decoded.shape == (112, 112, 3)
    assert got["r2"].status == pb.UPLOAD_STATUS_EXPIRED and got["r2"].message
    assert got["r3"].status == pb.UPLOAD_STATUS_UNKNOWN_FACE
    assert got["r4"].status == pb.UPLOAD_STATUS_ERROR and "no-such-codec" in got["r4"].message
    assert rig.counters["uploads_ok"] == 1 and rig.counters["uploads_expired"] == 1


def test_drop_texture_is_honoured(peer, rig_factory):
    rig = rig_factory(peer.port)
    chip = np.zeros((112, 112, 3), np.uint8)
    rig.texture.put("a", chip, b"b")
    rig.texture.put("b", chip, b"b")
    rig.stream.start()
    peer.outbox.put(pb.ServerMessage(drop_texture=pb.DropTexture(face_ids=["a"])))
    wait_until(lambda: len(rig.texture) == 1, what="drop")
    assert rig.texture.get("b").status.value == "ok"


def _base_payload() -> bytes:
    """A real base layer (the reconstruction network predicts from it)."""
    from facecodec import base_layer

    return base_layer.encode(np.random.default_rng(1).normal(0, 0.05, 128).astype(np.float32))
