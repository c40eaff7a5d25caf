"""The whole agent: video -> faces -> tracks -> texture + spool -> stream, against a scripted peer.

The first tests replace only the face front end (by a detector of the pasted photo, so they
need no model and run in a second); the slow ones run the real front end and base layer.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from edge_testkit import make_video

from edge_agent.agent import EdgeAgent
from edge_agent.pipeline import FacePipeline
from edge_agent.settings import EdgeSettings
from facewire.v1 import ingest_pb2 as pb
from testkit.processes import free_port, wait_until


class PhotoDetector:
    """Stands in for FaceFrontEnd: the non-grey rectangle of a composed frame is 'the face'."""

    backend = "dlib-resnet-128"

    def analyze(self, rgb: np.ndarray, regions=None) -> list:
        from facecodec.frontend import Detection, Face

        ys, xs = np.nonzero(np.any(rgb != 90, axis=2) & np.any(np.abs(rgb.astype(int) - 90) > 8, axis=2))
        if len(xs) < 1000:
            return []
        box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
        det = Detection(box, 0.99, np.zeros((5, 2), np.float32))
        chip = np.ascontiguousarray(rgb[ys.min() : ys.min() + 150, xs.min() : xs.min() + 150])
        return [Face(det, chip, np.full(128, 0.05, np.float32), self.backend)]


def fake_base(feature: np.ndarray, backend: str) -> bytes:
    """The real base layer once a model is registered (a reconstruction model predicts from it)."""
    from facecodec import base_layer
    from facecodec.errors import UnknownModelError

    try:
        return base_layer.encode(feature, backend)
    except UnknownModelError:
        return b"\xb1\x10\x00\x00\x00" + np.asarray(feature, np.float16).tobytes()[:32]


def settings(tmp_path, port: int, source, **kw) -> EdgeSettings:
    base = dict(server=f"127.0.0.1:{port}", token="secret", data_dir=tmp_path / "edge",
                cameras=[{"id": "cam-1", "source": str(source)}], sample_fps=2.0,
                tracking={"interval_s": 10.0, "ttl_s": 0.4}, backoff_initial_s=0.05, backoff_max_s=0.3, status_interval_s=0.2,
                status_file=tmp_path / "status.json", exit_when_done=True, drain_timeout_s=2.0)
    base.update(kw)
    return EdgeSettings(**base)


def run_in_thread(agent: EdgeAgent):
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", agent.run()), daemon=True)
    t.start()
    return t, result


def test_two_people_give_two_observations_acked_with_texture_kept(tmp_path, short_video, peer):
    agent = EdgeAgent(settings(tmp_path, peer.port, short_video),
                      FacePipeline(PhotoDetector(), encode_base=fake_base))
    t, result = run_in_thread(agent)
    t.join(30)
    assert result == {"rc": 0}
    assert len(peer.stored) == 2  # 12 frames, 8 with a face, 2 people: one observation per track
    tracks = {o.track_id for o in peer.stored.values()}
    assert len(tracks) == 2
    for o in peer.stored.values():
        assert o.camera_id == "cam-1" and o.base_layer[0] & 0xF0 == 0xB0 and o.quality.probability > 0.9
        assert o.box.x2 > o.box.x1 and o.capture_time_ms > 0 and o.feature_backend == "dlib-resnet-128"
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["frames"] == 12 and status["faces"] == 8 and status["observations"] == 2
    assert status["acknowledged"] == 2 and status["spooled"] == 0 and status["textures"] == 2


def test_spooled_faces_survive_an_agent_restart_with_the_same_ids(tmp_path, short_video, make_peer):
    port = free_port()
    pipeline = FacePipeline(PhotoDetector(), encode_base=fake_base)
    first = EdgeAgent(settings(tmp_path, port, short_video, exit_when_done=False), pipeline)
    t, _ = run_in_thread(first)
    wait_until(lambda: all(w.done.is_set() for w in first.workers), what="the video to end")
    first.request_stop()
    t.join(15)
    from edge_agent.spool import Spool

    spool = Spool(tmp_path / "edge" / "spool.sqlite3", 1 << 20)
    ids = sorted(r.face_id for r in spool.pending("cam-1", 0, 100))
    spool.close()
    assert len(ids) == 2  # the server never existed: both observations wait on disk

    empty = tmp_path / "no-more-frames"
    empty.mkdir()
    peer = make_peer(port)
    second = EdgeAgent(settings(tmp_path, port, empty), pipeline)
    t, result = run_in_thread(second)
    t.join(30)
    assert result == {"rc": 0} and sorted(peer.stored) == ids


def test_enhancement_request_after_the_face_was_sent(tmp_path, short_video, peer):
    agent = EdgeAgent(settings(tmp_path, peer.port, short_video, exit_when_done=False),
                      FacePipeline(PhotoDetector(), encode_base=fake_base))
    t, _ = run_in_thread(agent)
    try:
        wait_until(lambda: len(peer.stored) == 2 and len(agent.spool) == 0, what="two acked faces")
        fid = sorted(peer.stored)[0]
        for rid, face in (("r1", fid), ("r2", "nope")):
            peer.outbox.put(pb.ServerMessage(enhancement_request=pb.EnhancementRequest(request_id=rid, face_id=face)))
        ups = {u.request_id: u for u in (peer.uploads.get(timeout=15), peer.uploads.get(timeout=15))}
        assert ups["r1"].status == pb.UPLOAD_STATUS_OK and len(ups["r1"].payload) > 100
        assert ups["r2"].status == pb.UPLOAD_STATUS_UNKNOWN_FACE
    finally:
        agent.request_stop()
        t.join(15)


def test_a_camera_that_fails_does_not_stop_the_others(tmp_path, short_video, peer):
    s = settings(tmp_path, peer.port, short_video)
    s = s.model_copy(update={"cameras": [*s.cameras, type(s.cameras[0])(id="cam-2", source=str(tmp_path / "gone.avi"))]})
    agent = EdgeAgent(s, FacePipeline(PhotoDetector(), encode_base=fake_base))
    t, result = run_in_thread(agent)
    t.join(30)
    assert result == {"rc": 0} and len(peer.stored) == 2
    assert agent.workers[1].error and "does not exist" in agent.workers[1].error


@pytest.mark.slow
def test_real_front_end_on_a_video(tmp_path, peer):
    """MTCNN + dlib + the registered base layer on a made-up video of three people."""
    from facecodec import base_layer

    video = make_video(tmp_path / "three.avi", ["Ashanti", "Kurt_Warner", "Sophia_Loren"], 2.0, 10.0, gap_s=1.0)
    agent = EdgeAgent(settings(tmp_path, peer.port, video))
    t, result = run_in_thread(agent)
    t.join(120)
    assert result == {"rc": 0}
    assert len(peer.stored) == 3 and len({o.track_id for o in peer.stored.values()}) == 3
    decoded = [base_layer.decode(o.base_layer) for o in peer.stored.values()]
    assert all(d.feature.shape == (128,) for d in decoded)
    d = np.linalg.norm(decoded[0].feature - decoded[1].feature)
    assert d > 0.6  # different people stay apart after coding


def test_context_picture_is_kept_with_the_texture_and_answered_on_request(tmp_path, short_video, peer):
    """The context layer: the frame around each face sent is cut, coded (AVIF) and kept beside its
    crop; a LAYER_CONTEXT request gets it, the face where the payload says; after a drop, EXPIRED."""
    from analysis_server.edge_link import LayerRequest
    from facecodec import context
    from facewire.v2 import ingest_pb2 as pb2

    agent = EdgeAgent(settings(tmp_path, peer.port, short_video, exit_when_done=False,
                               context={"scale": 2.0, "size": 160}),
                      FacePipeline(PhotoDetector(), encode_base=fake_base))
    t, _ = run_in_thread(agent)
    try:
        wait_until(lambda: len(peer.stored) == 2 and len(agent.spool) == 0, what="two acked faces")
        assert list(peer.hellos[0].layers) == [pb2.LAYER_CONTEXT]
        fid = sorted(peer.stored)[0]
        box = peer.stored[fid].box
        peer.outbox.put(LayerRequest("c1", fid, "context"))
        up = peer.uploads.get(timeout=15)
        assert up.request_id == "c1" and up.status == pb.UPLOAD_STATUS_OK
        picture, header = context.decode(up.payload)
        assert header.codec == "avif" and max(picture.image.shape[:2]) == 160  # downscaled to the setting
        x, y, w, h = header.region  # 2 face widths wide, the face inside it
        assert x <= box.x1 and box.x2 <= x + w and y <= box.y1 and box.y2 <= y + h
        assert w == pytest.approx(2 * max(box.x2 - box.x1, box.y2 - box.y1), abs=2)
        fx, fy, fw, fh = header.face_box
        face = picture.image[fy:fy + fh, fx:fx + fw].astype(int)
        assert np.abs(face - 90).mean() > 20  # the photo, not the grey background around it
        peer.outbox.put(pb.ServerMessage(drop_texture=pb.DropTexture(face_ids=[fid])))
        peer.outbox.put(LayerRequest("c2", fid, "context"))
        up = peer.uploads.get(timeout=15)
        assert up.request_id == "c2" and up.status == pb.UPLOAD_STATUS_EXPIRED
    finally:
        agent.request_stop()
        t.join(15)


def test_context_layer_off_answers_no_layer(tmp_path, short_video, peer):
    from analysis_server.edge_link import LayerRequest

    agent = EdgeAgent(settings(tmp_path, peer.port, short_video, exit_when_done=False, context={"enabled": False}),
                      FacePipeline(PhotoDetector(), encode_base=fake_base))
    t, _ = run_in_thread(agent)
    try:
        wait_until(lambda: len(peer.stored) == 2 and len(agent.spool) == 0, what="two acked faces")
        peer.outbox.put(LayerRequest("c1", sorted(peer.stored)[0], "context"))
        up = peer.uploads.get(timeout=15)
        assert up.status == pb.UPLOAD_STATUS_NO_LAYER and "EDGE_CONTEXT__ENABLED" in up.message
    finally:
        agent.request_stop()
        t.join(15)
