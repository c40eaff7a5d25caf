"""The ``facecodec`` command line: encode an image, inspect and decode the payload."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facecodec.cli import main

pytestmark = pytest.mark.slow


def test_encode_info_decode_round_trip(tmp_path, capsys, sample_images):
    out = tmp_path / "face.fcb"
    assert main(["encode", str(sample_images[0]), "-o", str(out)]) == 0
    enc = json.loads(capsys.readouterr().out)
    assert enc["bytes"] == out.stat().st_size <= 44
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "dlib-resnet-128" and info["bytes"] == enc["bytes"] and info["kind"] == "base-layer"
    assert main(["decode", str(out), "-o", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (128,)


def test_enhance_writes_a_container_whose_layers_decode_to_images(tmp_path, capsys, sample_images):
    from PIL import Image

    out = tmp_path / "face.fcs"
    assert main(["encode", str(sample_images[0]), "-o", str(out), "--enhance", "webp:q50", "--enhance", "jpeg2000:q30"]) == 0
    enc = json.loads(capsys.readouterr().out)
    assert enc["bytes"] == out.stat().st_size and len(enc["enhancement_bytes"]) == 2
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "container" and [e["codec"] for e in info["enhancements"]] == ["webp", "jpeg2000"]
    for layer in ("base", "full"):
        png = tmp_path / f"{layer}.png"
        assert main(["decode", str(out), "--layer", layer, "-o", str(png)]) == 0
        capsys.readouterr()
        assert Image.open(png).size == (112, 112)
    assert main(["decode", str(out), "-o", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (128,)


def test_full_layer_of_a_base_only_file_is_a_clear_error(tmp_path, capsys, sample_images):
    out = tmp_path / "face.fcb"
    assert main(["encode", str(sample_images[0]), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["decode", str(out), "--layer", "full"]) == 2
    assert "no enhancement layer" in capsys.readouterr().err


def test_a_corrupt_payload_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.fcb"
    bad.write_bytes(b"\xb1\x17garbage")
    assert main(["info", str(bad)]) == 2
    assert "facecodec: error:" in capsys.readouterr().err
