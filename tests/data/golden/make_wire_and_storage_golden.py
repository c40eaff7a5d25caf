"""How tests/data/golden/wire_and_storage.json was made (run once, when these formats were introduced;
never to make a failing golden test pass). ``python tests/data/golden/make_wire_and_storage_golden.py``.

The contracts of this round besides the codec's payloads:

- **facewire.v2**: a serialized ``EdgeMessage`` with a ``Hello`` and one with an ``ObservationBatch`` of
  three faces in packed columns (format-2 golden base layers, deltas of seq, time and box, a track) and
  one v1 observation in ``legacy``; expected: the observations the server unpacks from them.
- **Storage layout 2**: a packed face record (matched) and a tombstone, with the fields they hold.
- **Context layer**: a context payload (AVIF) cut from a committed sample image, its header fields and
  the SHA-256 of its decoded pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SAMPLE = HERE.parent / "faces"
AGENT_ID = bytes.fromhex("0123456789abcdef")
CAMERA = "gate-1"
T0 = 1_764_000_000_000  # a capture time in November 2025


def observations(obs) -> list[dict]:
    return [{"face_id": o.face_id, "camera_id": o.camera_id, "capture_time_ms": o.capture_time_ms,
             "box": [o.box.x1, o.box.y1, o.box.x2, o.box.y2], "probability": round(o.quality.probability, 6),
             "face_size": o.quality.face_size, "base_layer": o.base_layer.hex(), "format_version": o.format_version,
             "feature_backend": o.feature_backend, "track_id": o.track_id} for o in obs]


def main() -> None:
    from analysis_server import records as rec
    from analysis_server.grpc_v2 import StreamState, unpack
    from facecodec import base_layer, context
    from facecodec.images import load_rgb
    from facewire.v1 import ingest_pb2 as pb1
    from facewire.v2 import ingest_pb2 as pb2

    bases = [bytes.fromhex(c["payload"]) for c in json.loads((HERE / "base_layer_format2.json").read_text())["cases"][:4]]
    head = bases[0][:3]
    hello = pb2.Hello(camera_id=CAMERA, agent_version="golden", agent_id=AGENT_ID, feature_backend="dlib-resnet-128",
                      base_format=head[0] & 0x0F, base_model_tag=head[2], base_step=head[1] & 0x0F,
                      layers=[pb2.LAYER_CONTEXT])
    batch = pb2.ObservationBatch()
    rows = [(7, T0, (100, 80, 60, 72), 97, 0), (8, T0 + 100, (104, 82, 61, 72), 95, 1),
            (10, T0 + 350, (300, 90, 40, 48), 88, 0)]
    last = (0, 0, (0, 0, 0, 0))
    bodies = []
    for (seq, t, box, prob, track), base in zip(rows, bases):
        batch.seq.append(seq - last[0])
        batch.capture_ms.append(t - last[1])
        batch.box.extend(v - p for v, p in zip(box, last[2]))
        batch.probability.append(prob)
        batch.track.append(track)
        body = base_layer.wire_body(base)
        bodies.append(body)
        batch.body_length.append(len(body))
        last = (seq, t, box)
    batch.bodies = b"".join(bodies)
    batch.legacy.append(pb1.FaceObservation(face_id="legacy-face-1", camera_id=CAMERA, capture_time_ms=T0 - 5000,
                                            box=pb1.Box(x1=10, y1=20, x2=70, y2=92),
                                            quality=pb1.Quality(probability=0.99, face_size=60), base_layer=bases[3],
                                            format_version=2, feature_backend="dlib-resnet-128", track_id="legacy-t"))
    batch.legacy_seq.append(3)
    hello_msg = pb2.EdgeMessage(hello=hello).SerializeToString(deterministic=True)
    batch_msg = pb2.EdgeMessage(observations=batch).SerializeToString(deterministic=True)
    state = StreamState(pb2.EdgeMessage.FromString(hello_msg).hello, CAMERA)
    obs, seqs, refused = unpack(pb2.EdgeMessage.FromString(batch_msg).observations, state, CAMERA)
    assert not refused

    record = rec.pack_record("face-0001", CAMERA, T0, T0 + 420, (100.5, 80.25, 160.0, 152.0), 0.97, 60.0, False,
                             "track-9", "id-42", 0.4375, bases[0])
    tomb = rec.pack_tombstone("face-0002", T0 + 1000)

    image = load_rgb(SAMPLE / "Alvaro_Uribe" / "Alvaro_Uribe_0001.jpg")
    picture = context.cut(image, (90.0, 80.0, 160.0, 170.0))
    payload = context.encode(picture, "avif", 50)
    decoded, header = context.decode(payload)

    out = {"made_by": "facecodec at the commit that added this file",
           "facewire_v2": {"hello": hello_msg.hex(), "batch": batch_msg.hex(), "camera_id": CAMERA,
                           "seqs": seqs, "observations": observations(obs)},
           "storage_layout_2": {
               "record": record.hex(),
               "record_fields": {"face_id": "face-0001", "camera_id": CAMERA, "capture_ms": T0, "received_ms": T0 + 420,
                                 "box": [100.5, 80.25, 160.0, 152.0], "probability": 0.97, "face_size": 60.0,
                                 "fallback": False, "track_id": "track-9", "identity_id": "id-42", "distance": 0.4375,
                                 "base": bases[0].hex()},
               "tombstone": tomb.hex(), "tombstone_fields": {"face_id": "face-0002", "capture_ms": T0 + 1000}},
           "context": {"payload": payload.hex(), "codec": header.codec, "quality": header.quality,
                       "width": header.width, "height": header.height, "face_box": list(header.face_box),
                       "region": list(header.region),
                       "decoded_sha256": hashlib.sha256(np.ascontiguousarray(decoded.image).tobytes()).hexdigest()}}
    (HERE / "wire_and_storage.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
