"""The integration guide's minimal camera client (proto/examples/camera_client.py) against a real server:
its Python for the wire is generated from proto/*.proto into a temporary folder by grpc_tools at test
time, and it runs in its own process whose path holds that folder and nothing of this repository (so it
cannot import ``facewire``); the codec comes from the ``facecodec`` command. It streams the faces that
``facecodec analyze`` found, the server stores them, and an operator's full-fidelity request is answered
by the client (``facecodec enhance``) and shown as the 112x112 face."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from server_testkit import API_KEY, TOKENS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def generate(out: Path) -> None:
    """The wire's Python from the .proto files, as an integrator makes it (grpc_tools.protoc)."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    protos = [str(p) for p in sorted((ROOT / "proto" / "facewire").glob("v*/*.proto"))]
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *protos])
    assert rc == 0
    for folder in ("facewire", "facewire/v1", "facewire/v2"):
        (out / folder / "__init__.py").touch()


def test_the_guides_minimal_client_streams_faces_and_answers_a_full_fidelity_request(make_server, tmp_path,
                                                                                     sample_images):
    server = make_server()
    gen = tmp_path / "generated"
    gen.mkdir()
    generate(gen)
    # The facecodec command, as an installed package provides it.
    facecodec = tmp_path / "facecodec"
    facecodec.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m facecodec.cli "$@"\n')
    facecodec.chmod(0o755)
    faces = tmp_path / "faces.jsonl"
    subprocess.run([str(facecodec), "analyze", str(sample_images[0]), "--chips", str(tmp_path / "crops"),
                    "-o", str(faces)], check=True, capture_output=True)
    client_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    client_env["PYTHONPATH"] = str(gen)
    client = subprocess.Popen(
        [sys.executable, str(ROOT / "proto" / "examples" / "camera_client.py"), "--server", server.grpc_target,
         "--camera-id", "cam-1", "--token", TOKENS["cam-1"], "--faces", str(faces), "--state",
         str(tmp_path / "state.json"), "--facecodec", str(facecodec)],
        cwd=tmp_path, env=client_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline()
        assert line, client.stderr.read()
        ack = json.loads(line)
        assert Path(ack["generated_code"]).is_relative_to(gen)  # the generated module, not this repository's
        assert ack["rejected"] == [] and len(ack["stored"]) == 1
        (face_id,) = ack["stored"]
        with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=60) as api:
            face = api.get(f"/faces/{face_id}").json()
            analyzed = json.loads(faces.read_text())["faces"][0]
            assert face["camera_id"] == "cam-1" and face["base_layer_bytes"] == analyzed["base_bytes"]
            assert face["box"]["x1"] == round(analyzed["box"][0])
            r = api.get(f"/faces/{face_id}/image", params={"layer": "full", "codec": "webp", "quality": 60})
            assert r.status_code == 200, r.text
            assert r.headers["X-Enhancement-Source"] == "edge" and r.headers["X-Enhancement-Codec"] == "webp"
            from PIL import Image

            assert Image.open(io.BytesIO(r.content)).size == (112, 112)
            # the client names no context layer in its Hello: the server does not ask it
            assert api.get(f"/faces/{face_id}/image", params={"layer": "context"}).status_code == 501
    finally:
        client.stdin.close()
        assert client.wait(30) == 0, client.stderr.read()
    assert json.loads((tmp_path / "state.json").read_text())["seq"] == 1
