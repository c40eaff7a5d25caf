"""``layer=full``: the on-demand round trip to a real edge-side gRPC client, the cache, and its failures."""

from __future__ import annotations

import io
import queue

import numpy as np
import pytest
from PIL import Image
from server_testkit import observation

from facecodec import enhancement

pytestmark = pytest.mark.slow


def _png(r) -> np.ndarray:
    assert r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def test_full_layer_is_fetched_from_the_edge_once_then_served_from_the_cache(api, edges, samples):
    s = samples[0]
    edge = edges("cam-1", textures={"t-1": (s.chip, s.base)})
    edge.send(observation("t-1", s.base))
    r = api.get("/faces/t-1/image", params={"layer": "full", "codec": "webp", "quality": 60})
    assert r.status_code == 200, r.text
    req = edge.requests.get(timeout=1)
    assert (req.face_id, req.codec, req.quality) == ("t-1", "webp", 60) and req.request_id
    expected = enhancement.decode(enhancement.encode(s.chip, s.base, "webp", 60), s.base)
    assert np.array_equal(_png(r), expected) and expected.shape == (112, 112, 3)
    assert r.headers["x-enhancement-source"] == "edge"
    assert int(r.headers["x-enhancement-layer-bytes"]) > 0 and int(r.headers["x-base-layer-bytes"]) == len(s.base)
    assert api.get("/faces/t-1").json()["enhancement_cached"] is True

    again = api.get("/faces/t-1/image", params={"layer": "full"})
    assert again.status_code == 200 and again.headers["x-enhancement-source"] == "cache"
    assert np.array_equal(_png(again), expected)
    with pytest.raises(queue.Empty):
        edge.requests.get(timeout=0.2)  # no second request reached the edge


def test_full_layer_of_a_face_whose_camera_is_offline_is_a_504_that_says_so(api, edges, samples):
    edge = edges("cam-1")
    edge.send(observation("off-1", samples[0].base))
    edge.close()
    r = api.get("/faces/off-1/image", params={"layer": "full"})
    assert r.status_code == 504 and "offline" in r.json()["detail"] and "cam-1" in r.json()["detail"]


def test_an_edge_that_never_answers_gives_a_504_after_the_timeout(make_server, samples):
    import httpx
    from server_testkit import API_KEY, Edge

    server = make_server(enhancement_timeout_s=0.5)
    edge = Edge(server.grpc_target, "cam-1", mode="silent")
    edge.send(observation("slow-1", samples[0].base))
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=10) as api:
        r = api.get("/faces/slow-1/image", params={"layer": "full"})
    assert r.status_code == 504 and "within 0.5 s" in r.json()["detail"]
    assert edge.requests.get(timeout=1).face_id == "slow-1"
    edge.close()


@pytest.mark.parametrize("mode,status,words", [("expired", 410, "no longer holds"), ("unknown", 404, "does not know")])
def test_edge_upload_status_expired_or_unknown_face_is_a_clear_answer(api, edges, samples, mode, status, words):
    edge = edges("cam-1", mode=mode)
    edge.send(observation("x-1", samples[0].base))
    r = api.get("/faces/x-1/image", params={"layer": "full"})
    assert r.status_code == status and words in r.json()["detail"]


def test_every_image_request_is_written_to_the_audit_log(api, edges, samples):
    s = samples[0]
    edges("cam-1", textures={"a-1": (s.chip, s.base)}).send(observation("a-1", s.base))
    api.get("/faces/a-1/image", params={"layer": "full"})
    api.get("/faces/a-1/image", params={"layer": "base"})
    api.get("/faces/zzz/image", params={"layer": "full"})
    log = api.get("/audit", params={"count": 10}).json()
    images = [e for e in log if e["action"] == "image"]
    assert [(e["face_id"], e["layer"]) for e in images] == [("zzz", "full"), ("a-1", "base"), ("a-1", "full")]
    assert images[2]["status"] == 200 and images[0]["status"] == 404
    assert all(e["who"].startswith("key:") and "test-api-key" not in e["who"] and int(e["time_ms"]) > 0 for e in images)
    assert [e["face_id"] for e in api.get("/audit", params={"face_id": "a-1"}).json()] == ["a-1", "a-1"]


def test_base_layer_image_is_rebuilt_once_a_reconstruction_model_is_registered(api, edges, samples,
                                                                               registered_reconstruction):
    from facecodec import reconstruction

    s = samples[0]
    edges("cam-1").send(observation("rb-1", s.base))
    r = api.get("/faces/rb-1/image", params={"layer": "base"})
    assert r.status_code == 200, r.text
    assert np.array_equal(_png(r), reconstruction.reconstruct(s.base))
    assert r.headers["x-face-layer"] == "base" and "x-enhancement-layer-bytes" not in r.headers
