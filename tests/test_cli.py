"""The ``facecodec`` command line: encode an image, inspect and decode the payload."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facecodec.cli import main

pytestmark = pytest.mark.slow


def test_encode_info_decode_round_trip(tmp_path, capsys, sample_images):
    out = tmp_path / "face.fcb"
    assert main(["encode", str(sample_images[0]), "-o", str(out), "--enhance", "webp:q50"]) == 0
    enc = json.loads(capsys.readouterr().out)
    assert enc["bytes"] == out.stat().st_size <= 44
    assert enc["enhancement_bytes"] == (tmp_path / "face.fcb.enh").stat().st_size
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "dlib-resnet-128" and info["bytes"] == enc["bytes"]
    assert main(["decode", str(out), "-o", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (128,)


def test_a_corrupt_payload_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.fcb"
    bad.write_bytes(b"\xb1\x17garbage")
    assert main(["info", str(bad)]) == 2
    assert "facecodec: error:" in capsys.readouterr().err
