"""A minimal camera client of the analysis server, written from proto/ alone (proto/README.md, "Integrating a
camera"): it needs grpcio, the Python generated from proto/facewire/v2/ingest.proto (and the v1 file it
imports) by grpc_tools.protoc, and the ``facecodec`` command for the codec; nothing of this repository's
Python.

    facecodec analyze frame.jpg --chips crops -o faces.jsonl      # the faces of a frame, with their crops
    python camera_client.py --server HOST:50051 --camera-id door --token TOKEN --faces faces.jsonl

It opens one facewire.v2 stream for the camera, says Hello (the base-layer header every face shares),
sends every face of ``faces.jsonl`` in one ObservationBatch of packed columns, prints what the Ack
stored (one JSON line), then answers the server's requests until its standard input closes: an
EnhancementRequest with ``facecodec enhance --crop CROP --base BASE`` (the payload the server decodes
into the full-fidelity face), a DropTexture by deleting the crops. Sequence numbers are kept in
``--state`` so that a face is never numbered twice.
"""

from __future__ import annotations

import argparse
import base64
import json
import queue
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from facewire.v2 import ingest_pb2 as pb
from facewire.v2 import ingest_pb2_grpc as pb_grpc


def load_state(path: Path) -> dict:
    """The agent id (8 random bytes, made once) and the last sequence number used."""
    if path.exists():
        return json.loads(path.read_text())
    return {"agent_id": secrets.token_hex(8), "seq": 0}


def face_id(agent_id: bytes, seq: int) -> str:
    return f"{agent_id.hex()}{seq:016x}"  # how the server names a v2 face


def batch_of(faces: list[dict], first_seq: int, capture_ms: int) -> pb.ObservationBatch:
    """The faces as packed columns: seq and time delta-coded, boxes as differences from the previous face."""
    batch = pb.ObservationBatch()
    last_box = (0, 0, 0, 0)
    bodies = []
    for i, f in enumerate(faces):
        batch.seq.append(first_seq if i == 0 else 1)
        batch.capture_ms.append(capture_ms if i == 0 else 0)
        x1, y1, x2, y2 = f["box"]
        box = (max(0, round(x1)), max(0, round(y1)), max(1, round(x2 - x1)), max(1, round(y2 - y1)))
        batch.box.extend(v - p for v, p in zip(box, last_box))
        last_box = box
        batch.probability.append(round(100 * f["quality"]["probability"]))
        batch.track.append(0)  # each face its own track
        body = base64.b64decode(f["wire_body"])
        bodies.append(body)
        batch.body_length.append(len(body))
    batch.bodies = b"".join(bodies)
    return batch


def enhancement(face: dict, req: pb.EnhancementRequest, facecodec: list[str]) -> pb.EnhancementUpload:
    """The answer to one request for a face's layer: `facecodec enhance` of its crop and base layer."""
    up = pb.EnhancementUpload(request_id=req.request_id)
    if req.layer != pb.LAYER_FACE:
        up.status, up.message = pb.UPLOAD_STATUS_NO_LAYER, "this client keeps no context picture"
        return up
    if face is None:
        up.status, up.message = pb.UPLOAD_STATUS_UNKNOWN_FACE, "not a face of this client"
        return up
    if face.get("dropped"):
        up.status, up.message = pb.UPLOAD_STATUS_EXPIRED, "dropped at the server's request"
        return up
    with tempfile.TemporaryDirectory() as tmp:
        base, out = Path(tmp) / "face.fcb", Path(tmp) / "face.fce"
        base.write_bytes(base64.b64decode(face["base_layer"]))
        cmd = [*facecodec, "enhance", "--crop", face["crop"], "--base", str(base), "-o", str(out),
               "--codec", req.codec or "jpeg", "--quality", str(req.quality or 75)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            up.status, up.message = pb.UPLOAD_STATUS_ERROR, run.stderr.strip()[-500:]
            return up
        up.status, up.payload = pb.UPLOAD_STATUS_OK, out.read_bytes()
    return up


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="host:port of the server's gRPC ingest")
    p.add_argument("--camera-id", required=True)
    p.add_argument("--token", required=True, help="the camera's token (FACESERVER_CAMERA_TOKENS)")
    p.add_argument("--faces", type=Path, required=True, help="JSON lines of `facecodec analyze --chips DIR`")
    p.add_argument("--state", type=Path, default=Path("camera_client.json"), help="agent id and last seq")
    p.add_argument("--facecodec", default="facecodec", help="the facecodec command (split on spaces)")
    args = p.parse_args(argv)

    state = load_state(args.state)
    agent_id = bytes.fromhex(state["agent_id"])
    records = [json.loads(line) for line in args.faces.read_text().splitlines() if line.strip()]
    faces = [f for r in records for f in r.get("faces", [])]
    if not faces:
        print(json.dumps({"error": "no face in " + str(args.faces)}), flush=True)
        return 1
    first_seq = state["seq"] + 1
    state["seq"] += len(faces)
    args.state.write_text(json.dumps(state))  # before sending: a seq is never used twice
    by_seq = {first_seq + i: f for i, f in enumerate(faces)}
    header = faces[0]["base_header"]
    if any(f["base_header"] != header for f in faces):  # Hello fixes one header for the stream
        print(json.dumps({"error": "faces with different base-layer headers: one stream each"}), flush=True)
        return 1

    outbox: queue.Queue = queue.Queue()
    outbox.put(pb.EdgeMessage(hello=pb.Hello(
        camera_id=args.camera_id, agent_version="camera_client/1", agent_id=agent_id,
        feature_backend=header["backend"], base_format=header["format"], base_model_tag=header["model_tag"],
        base_step=header["step"])))
    outbox.put(pb.EdgeMessage(observations=batch_of(faces, first_seq, int(time.time() * 1000))))

    channel = grpc.insecure_channel(args.server)
    call = pb_grpc.FaceIngestStub(channel).Stream(iter(outbox.get, None), metadata=(
        ("authorization", f"Bearer {args.token}"), ("x-camera-id", args.camera_id)))
    threading.Thread(target=lambda: (sys.stdin.read(), outbox.put(None), call.cancel()), daemon=True).start()
    facecodec = args.facecodec.split()
    try:
        for msg in call:
            kind = msg.WhichOneof("kind")
            if kind == "ack":
                stored = [face_id(agent_id, q) for q in by_seq if q <= msg.ack.through
                          and q not in {r.seq for r in msg.ack.rejected}]
                rejected = [{"seq": r.seq, "field": r.field, "reason": r.reason} for r in msg.ack.rejected]
                print(json.dumps({"stored": stored, "rejected": rejected, "generated_code": pb.__file__}), flush=True)
            elif kind == "enhancement_request":
                req = msg.enhancement_request
                outbox.put(pb.EdgeMessage(enhancement=enhancement(by_seq.get(req.seq), req, facecodec)))
            elif kind == "drop_texture":
                for q in msg.drop_texture.seq:
                    face = by_seq.get(q)
                    if face is not None:
                        Path(face["crop"]).unlink(missing_ok=True)
                        face["dropped"] = True
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            print(json.dumps({"error": f"{e.code().name}: {e.details()}"}), flush=True)
            return 1
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
