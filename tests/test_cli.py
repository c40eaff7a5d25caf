"""The ``facecodec`` command line: analyse images (one or a batch), encode, write a standalone enhancement
payload, inspect and decode; start-up that loads nothing heavy and prints no warning."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest

from facecodec.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


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


def test_analyze_gives_every_face_with_box_landmarks_quality_and_a_base_layer(tmp_path, capsys, sample_images,
                                                                              sample_faces):
    from PIL import Image

    from facecodec import base_layer

    assert main(["analyze", str(sample_images[0]), "--chips", str(tmp_path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["image"] == str(sample_images[0]) and (record["width"], record["height"]) == (250, 250)
    (face,) = record["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= 250 and 0 <= y1 < y2 <= 250
    assert len(face["landmarks"]) == 5 and all(x1 - 5 <= x <= x2 + 5 and y1 - 5 <= y <= y2 + 5
                                               for x, y in face["landmarks"])
    assert face["quality"]["probability"] > 0.9 and not face["quality"]["fallback"]
    payload = base64.b64decode(face["base_layer"])
    decoded = base_layer.decode(payload)
    reference = sample_faces[0][1].feature  # the same image through the library's front end
    assert np.linalg.norm(decoded.feature - reference) < 0.3
    h = face["base_header"]
    assert (h["backend"], h["format"]) == ("dlib-resnet-128", payload[0] & 0x0F) and face["base_bytes"] == len(payload)
    assert payload.endswith(base64.b64decode(face["wire_body"]))  # what a facewire.v2 batch carries of it
    assert Image.open(face["crop"]).size == (112, 112)


def test_analyze_a_folder_and_a_glob_in_one_batch_with_a_progress_bar(tmp_path, capsys, sample_images):
    folder = sample_images[0].parent
    pattern = str(sample_images[-1].parent / "*.jpg")
    out = tmp_path / "faces.jsonl"
    assert main(["analyze", str(folder), pattern, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    expected = sorted(folder.glob("*.jpg")) + sorted(sample_images[-1].parent.glob("*.jpg"))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["image"] for r in lines] == [str(p) for p in expected]
    assert all(len(r["faces"]) >= 1 for r in lines)
    assert f"{len(expected)}/{len(expected)}" in captured.err  # tqdm's bar, on stderr
    assert captured.out == ""


def test_an_input_that_names_nothing_is_a_clear_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nothing-*.jpg")]) == 2
    assert "no such image" in capsys.readouterr().err


def test_enhance_writes_a_standalone_payload_from_an_image_or_from_crop_and_base(tmp_path, capsys, sample_images):
    from facecodec import enhancement
    from facecodec.crop import face_crop
    from facecodec.images import load_rgb

    base = tmp_path / "face.fcb"
    out = tmp_path / "face.fce"
    assert main(["enhance", str(sample_images[0]), "--codec", "webp", "--quality", "60", "--base", str(base),
                 "-o", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    payload = out.read_bytes()
    assert report["bytes"] == len(payload) and (report["codec"], report["quality"]) == ("webp", 60)
    face = enhancement.decode(payload, base.read_bytes())
    assert face.shape == (112, 112, 3)
    # the same from the crop analyze writes and the base layer: what an integrator's edge does on request
    assert main(["analyze", str(sample_images[0]), "--chips", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out)["faces"][0]
    base2 = tmp_path / "analyzed.fcb"
    base2.write_bytes(base64.b64decode(record["base_layer"]))
    out2 = tmp_path / "crop.fce"
    assert main(["enhance", "--crop", record["crop"], "--base", str(base2), "-o", str(out2)]) == 0
    capsys.readouterr()
    crop = face_crop(load_rgb(record["crop"])).astype(float)
    decoded = enhancement.decode(out2.read_bytes(), base2.read_bytes()).astype(float)
    psnr = 10 * np.log10(255**2 / np.mean((decoded - crop) ** 2))
    assert psnr > 28, psnr  # JPEG q75 of the residual
    assert main(["info", str(out2)]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "enhancement"
    png = tmp_path / "full.png"
    assert main(["decode", str(out2), "--base", str(base2), "-o", str(png)]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == [112, 112]


def test_encode_a_batch_into_a_folder(tmp_path, capsys, sample_images):
    assert main(["encode", *map(str, sample_images[:3]), "-o", str(tmp_path), "-q"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [Path(r["output"]).name for r in lines] == [p.stem + ".fcb" for p in sample_images[:3]]
    assert all(Path(r["output"]).stat().st_size == r["bytes"] for r in lines)


def test_start_up_loads_nothing_heavy_and_a_real_run_prints_no_warning(tmp_path, sample_images):
    """--help imports neither numpy, OpenCV, Pillow, OpenVINO nor PyTorch; a real analysis, as a user
    runs it (a new process, Python's warnings shown), writes nothing to stderr."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    trace = subprocess.run([sys.executable, "-X", "importtime", "-m", "facecodec.cli", "--help"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in trace.splitlines() if "|" in line}
    assert not imported & {"numpy", "cv2", "PIL", "openvino", "torch", "compressai", "scipy"}, imported
    run = subprocess.run([sys.executable, "-W", "default", "-m", "facecodec.cli", "analyze", str(sample_images[0])],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert run.stderr == "" and len(json.loads(run.stdout)["faces"]) == 1
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, facecodec.cli as c; c.main(['analyze', '-q', sys.argv[1]]); "
                               "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
                               "('torch', 'compressai'))), file=sys.stderr)", str(sample_images[0])],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stderr
