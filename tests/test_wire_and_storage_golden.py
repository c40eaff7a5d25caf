"""Golden facewire.v2 messages, storage-layout-2 values and a context-layer payload stay readable
(``tests/data/golden/wire_and_storage.json``, made once by ``make_wire_and_storage_golden.py``).

An edge of this release and a server of a later one must agree on the v2 wire; a Redis written today
must read after an upgrade; a context picture an edge kept must decode. Each golden is read by the code
that reads it in production (the server's v2 unpacking, ``records.unpack_record``, ``context.decode``)
and must give exactly what it gave when it was made.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from analysis_server import records as rec
from analysis_server.grpc_v2 import StreamState, unpack
from facecodec import base_layer, context
from facewire.v2 import ingest_pb2 as pb2

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden" / "wire_and_storage.json").read_text())


def test_golden_v2_messages_unpack_into_the_same_observations():
    wire = GOLDEN["facewire_v2"]
    hello = pb2.EdgeMessage.FromString(bytes.fromhex(wire["hello"]))
    assert hello.WhichOneof("kind") == "hello" and list(hello.hello.layers) == [pb2.LAYER_CONTEXT]
    state = StreamState(hello.hello, wire["camera_id"])
    batch = pb2.EdgeMessage.FromString(bytes.fromhex(wire["batch"]))
    obs, seqs, refused = unpack(batch.observations, state, wire["camera_id"])
    assert refused == [] and seqs == wire["seqs"]
    got = [{"face_id": o.face_id, "camera_id": o.camera_id, "capture_time_ms": o.capture_time_ms,
            "box": [o.box.x1, o.box.y1, o.box.x2, o.box.y2], "probability": round(o.quality.probability, 6),
            "face_size": o.quality.face_size, "base_layer": o.base_layer.hex(), "format_version": o.format_version,
            "feature_backend": o.feature_backend, "track_id": o.track_id} for o in obs]
    assert got == wire["observations"]
    for o in obs:  # every base layer rebuilt from the wire decodes
        assert base_layer.decode(o.base_layer).feature.shape == (128,)


def test_a_golden_layout_2_record_and_tombstone_read_back_field_for_field():
    store = GOLDEN["storage_layout_2"]
    value, want = bytes.fromhex(store["record"]), store["record_fields"]
    r = rec.unpack_record(value)
    assert (r.face_id, r.camera_id, r.capture_ms, r.received_ms) == (
        want["face_id"], want["camera_id"], want["capture_ms"], want["received_ms"])
    assert list(r.box) == pytest.approx(want["box"]) and r.probability == pytest.approx(want["probability"])
    assert (r.face_size, r.fallback, r.track_id, r.identity_id) == (
        want["face_size"], want["fallback"], want["track_id"], want["identity_id"])
    assert r.distance == pytest.approx(want["distance"]) and r.base.hex() == want["base"]
    assert rec.value_face_id(value) == want["face_id"] and rec.value_time(value) == want["capture_ms"]
    tomb = bytes.fromhex(store["tombstone"])
    assert rec.is_tombstone(tomb) and not rec.is_tombstone(value)
    assert (rec.value_face_id(tomb), rec.value_time(tomb)) == (store["tombstone_fields"]["face_id"],
                                                               store["tombstone_fields"]["capture_ms"])


def test_a_golden_context_payload_decodes_to_the_same_pixels():
    want = GOLDEN["context"]
    picture, header = context.decode(bytes.fromhex(want["payload"]))
    assert (header.codec, header.quality, header.width, header.height) == (
        want["codec"], want["quality"], want["width"], want["height"])
    assert list(header.face_box) == want["face_box"] and list(header.region) == want["region"]
    assert hashlib.sha256(np.ascontiguousarray(picture.image).tobytes()).hexdigest() == want["decoded_sha256"]
