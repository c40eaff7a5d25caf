"""The context layer over a real server, real gRPC streams and Redis: ``GET /faces/{id}/image?layer=context``
asks the edge that holds the face (facewire.v2, ``layer = LAYER_CONTEXT``, only if its Hello names it),
decodes the picture and answers PNG with the face's box; a v1 edge or a v2 edge that does not name the
layer gets no request and the caller a 501; an edge that kept no picture answers NO_LAYER (404).
Every attempt is audited with the codec and quality."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from server_testkit import observation
from test_ingest_v2 import AGENT, V2Edge, faces

from edge_agent.client import pack
from facecodec import context
from facewire import ids
from facewire.v2 import ingest_pb2 as pb2

pytestmark = pytest.mark.slow


class ContextEdge(V2Edge):
    """A v2 edge that names LAYER_CONTEXT in Hello and answers context requests with ``answer``."""

    def __init__(self, target, header, layers=(pb2.LAYER_CONTEXT,), answer=None):
        self.layers = list(layers)
        self.answer = answer
        super().__init__(target, header=header)
        threading.Thread(target=self._serve, daemon=True).start()

    def send_hello(self) -> None:
        h = self.header
        self._out.put(pb2.EdgeMessage(hello=pb2.Hello(
            camera_id=self.camera_id, agent_id=AGENT, feature_backend="dlib-resnet-128", base_format=h[0] & 0x0F,
            base_model_tag=h[2], base_step=h[1] & 0x0F, layers=self.layers)))

    def _serve(self) -> None:
        self.seen: list[pb2.EnhancementRequest] = []
        while not self.closed.is_set():
            try:
                req = self.requests.get(timeout=0.1)
            except Exception:
                continue
            self.seen.append(req)
            self.put(pb2.EdgeMessage(enhancement=self.answer(req)))


def picture() -> context.ContextPicture:
    frame = np.full((720, 1280, 3), 60, np.uint8)
    frame[100:220, 300:400] = (200, 150, 120)
    return context.cut(frame, (300, 100, 400, 220), scale=3.0, size=200)


def store_one(edge, samples) -> str:
    rows = faces(samples, 101, 1)
    ack = edge.send(pack(rows, samples[0].base[:3], "cam-1", lambda q: ids.face_id(AGENT, q)))
    assert ack.through == rows[0].seq and not ack.rejected
    return rows[0].face_id


def test_context_comes_from_the_edge_as_png_with_the_face_box_and_is_audited(server, api, samples):
    payload = context.encode(picture(), "avif", 50)
    edge = ContextEdge(server.grpc_target, samples[0].base[:3], answer=lambda r: pb2.EnhancementUpload(
        request_id=r.request_id, status=pb2.UPLOAD_STATUS_OK, payload=payload))
    try:
        face_id = store_one(edge, samples)
        r = api.get(f"/faces/{face_id}/image", params={"layer": "context"})
        assert r.status_code == 200, r.text
        from PIL import Image

        image = Image.open(io.BytesIO(r.content))
        assert image.format == "PNG" and image.size == (150, 200)  # a 360 x 480 region, its longer side down to 200
        assert r.headers["X-Context-Bytes"] == str(len(payload)) and r.headers["X-Context-Codec"] == "avif"
        assert r.headers["X-Face-Box"] == ",".join(map(str, picture().face_box))
        (req,) = edge.seen
        assert req.layer == pb2.LAYER_CONTEXT and req.seq == 101 and not req.codec
        assert api.get(f"/faces/{face_id}/image", params={"layer": "context"}).status_code == 200
        assert len(edge.seen) == 2  # never cached at the server: each view asks the edge
        audit = api.get("/audit", params={"face_id": face_id}).json()
        assert [(e["layer"], e["status"], e["codec"], e["quality"]) for e in audit] == [("context", 200, "avif", 50)] * 2
    finally:
        edge.close()


def test_an_edge_that_kept_no_picture_is_a_404_saying_so(server, api, samples):
    edge = ContextEdge(server.grpc_target, samples[0].base[:3], answer=lambda r: pb2.EnhancementUpload(
        request_id=r.request_id, status=pb2.UPLOAD_STATUS_NO_LAYER, message="context off"))
    try:
        face_id = store_one(edge, samples)
        r = api.get(f"/faces/{face_id}/image", params={"layer": "context"})
        assert r.status_code == 404 and "kept no context picture" in r.json()["detail"]
    finally:
        edge.close()


def test_a_v2_edge_that_does_not_name_the_layer_is_not_asked(server, api, samples):
    edge = ContextEdge(server.grpc_target, samples[0].base[:3], layers=(), answer=lambda r: pb2.EnhancementUpload(
        request_id=r.request_id, status=pb2.UPLOAD_STATUS_ERROR))
    try:
        face_id = store_one(edge, samples)
        r = api.get(f"/faces/{face_id}/image", params={"layer": "context"})
        assert r.status_code == 501 and "cannot serve the context layer" in r.json()["detail"]
        assert edge.seen == []
    finally:
        edge.close()


def test_a_v1_edge_serves_full_but_context_is_501(server, api, edges, samples):
    edge = edges("cam-1")
    edge.textures["v1-face"] = (samples[0].chip, samples[0].base)
    assert list(edge.send(observation("v1-face", samples[0].base)).face_ids) == ["v1-face"]
    r = api.get("/faces/v1-face/image", params={"layer": "context"})
    assert r.status_code == 501 and "facewire.v1" in r.json()["detail"]
    assert edge.requests.empty()
    r = api.get("/faces/v1-face/image", params={"layer": "full", "codec": "webp", "quality": 40})
    assert r.status_code == 200 and r.headers["X-Enhancement-Codec"] == "webp"
    audit = api.get("/audit", params={"face_id": "v1-face"}).json()
    assert [(e["layer"], e["status"], e.get("codec"), e.get("quality")) for e in audit] == [
        ("full", 200, "webp", 40), ("context", 501, None, None)]


def test_thumbnails_are_audited_apart_and_only_for_the_base_layer(server, api, edges, samples):
    edge = edges("cam-1")
    edge.send(observation("thumb-face", samples[0].base))
    r = api.get("/faces/thumb-face/image", params={"layer": "full", "purpose": "thumbnail"})
    assert r.status_code == 422 and edge.requests.empty()
    api.get("/faces/thumb-face/image", params={"layer": "base", "purpose": "thumbnail"})
    actions = [e["action"] for e in api.get("/audit", params={"face_id": "thumb-face"}).json()]
    assert actions == ["thumbnail", "thumbnail"]
