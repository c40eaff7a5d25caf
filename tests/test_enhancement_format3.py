"""Enhancement format 3: the per-face choice between the residual and the crop, the 6-7 byte header,
and the restoration network the payload names."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from eval.metrics import psnr
from facecodec import enhancement, restoration, zoo
from facecodec.crop import face_crop
from facecodec.errors import PayloadError, UnknownModelError


@pytest.fixture(scope="module")
def face(sample_faces):
    from facecodec import base_layer

    f = sample_faces[2][1]
    return f.chip, base_layer.encode(f.feature)


@pytest.fixture
def registered_restoration(tmp_path, monkeypatch):
    """A restoration network for AVIF (tag 200, so it is the newest) that brightens every face by
    8 levels, registered for one test the way ``python -m train restoration --export`` registers one."""
    import torch

    from facecodec import reconstruction
    from train.convert import _export
    from train.networks import Restorer

    net = Restorer(8).eval()
    with torch.no_grad():
        net.out.bias.fill_(8 / 255)
    onnx = _export(net, (torch.zeros(1, 8, 112, 112),), ["x"], ["y"], {"x": {0: "n"}, "y": {0: "n"}})
    predictor = zoo.entry(reconstruction.default_name("prediction"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("restoration.onnx", onnx)
        z.writestr("config.json", json.dumps({"codec": "avif", "predictor_tag": predictor.tag}))
    path = tmp_path / "restore-test.zip"
    path.write_bytes(buf.getvalue())
    entry = zoo.ModelEntry("restore-test", restoration.KIND, path.name, "0" * 64, tag=200, head="avif")
    real_entries, real_path = zoo._entries, zoo.model_path
    monkeypatch.setattr(zoo, "_entries", lambda: {**real_entries(), entry.name: entry})
    monkeypatch.setattr(zoo, "model_path", lambda name: path if name == entry.name else real_path(name))
    restoration.clear_cache()
    yield entry
    restoration.clear_cache()


@pytest.mark.parametrize("mode,size", [("residual", 7), ("direct", 6)])
def test_the_header_is_7_bytes_for_a_residual_and_6_for_the_crop(face, mode, size):
    chip, base = face
    payload = enhancement.encode(chip, base, "jpeg", 40, mode=mode, restore=False)
    h = enhancement.read_header(payload)
    assert (h.version, h.mode, h.size, h.codec, h.quality) == (3, mode, size, "jpeg", 40)
    assert psnr(enhancement.decode(payload, base), face_crop(chip)) > 30


def test_the_choice_keeps_one_of_the_two_candidates(face):
    chip, base = face
    for q in (0, 30, 80):
        auto = enhancement.encode(chip, base, "avif", q, restore=False)
        mode = enhancement.read_header(auto).mode
        assert auto == enhancement.encode(chip, base, "avif", q, mode=mode, restore=False)


def test_the_choice_takes_the_lossless_crop_over_a_rounded_residual(face):
    chip, base = face
    payload = enhancement.encode(chip, base, "png", 0)
    h = enhancement.read_header(payload)
    assert h.mode == "direct" and h.predictor_tag == 0  # nothing of the base layer is needed
    assert np.array_equal(enhancement.decode(payload, None), face_crop(chip))


def test_a_residual_of_any_magnitude_round_trips_within_a_level(face):
    chip, base = face
    payload = enhancement.encode(chip, base, "png", 0, mode="residual")
    h = enhancement.read_header(payload)
    assert 1 <= h.span <= 255 and h.lo == -h.span and h.hi == h.span
    assert np.abs(enhancement.decode(payload, base).astype(int) - face_crop(chip).astype(int)).max() <= 1


def test_format_2_is_still_written_on_request_and_for_the_learned_codecs(face):
    chip, base = face
    payload = enhancement.encode(chip, base, "avif", 30, version=2)
    assert enhancement.read_header(payload).version == 2 and len(payload) > 11
    with pytest.raises(ValueError):
        enhancement.encode(chip, base, "avif", 30, version=1)


def _with_restoration_tag(payload: bytes, tag: int) -> bytes:
    """``payload`` with another restoration tag (header byte 4) and its CRC-8 recomputed."""
    size = enhancement.read_header(payload).size
    head, body = bytearray(payload[: size - 1]), payload[size:]
    head[4] = tag
    return bytes(head) + bytes([enhancement._crc8(bytes(head) + body)]) + body


def test_the_restoration_network_named_in_the_header_is_run_by_the_decoder(face, registered_restoration):
    chip, base = face
    plain = enhancement.encode(chip, base, "avif", 30, mode="residual", restore=False)
    h = enhancement.read_header(plain)
    assert h.restoration_tag == 0
    named = _with_restoration_tag(plain, registered_restoration.tag)
    assert enhancement.read_header(named).restoration_tag == 200
    a, b = enhancement.decode(named, base).astype(int), enhancement.decode(plain, base).astype(int)
    assert np.median(a - b) == 8  # the test network adds 8 levels (clipped at 255)
    with pytest.raises(UnknownModelError):
        restoration.by_tag(201)


def test_the_encoder_leaves_out_a_restoration_that_would_worsen_the_face(face, registered_restoration):
    """The test network brightens every face: never closer to the crop, so never named."""
    chip, base = face
    for q in (0, 30, 80):
        assert enhancement.encode(chip, base, "avif", q) == enhancement.encode(chip, base, "avif", q, restore=False)


def test_a_payload_naming_an_unknown_restoration_is_refused(face):
    chip, base = face
    payload = bytearray(enhancement.encode(chip, base, "jpeg", 40, mode="residual", restore=False))
    payload[4] = 201
    body = bytes(payload[:6]) + bytes(payload[7:])
    payload[6] = enhancement._crc8(body)
    with pytest.raises(UnknownModelError):
        enhancement.decode(bytes(payload), base)


def test_format_3_truncations_and_bit_flips_raise_payload_errors(face):
    chip, base = face
    for mode in ("residual", "direct"):
        payload = enhancement.encode(chip, base, "avif", 20, mode=mode, restore=False)
        for n in range(0, len(payload), 5):
            with pytest.raises(PayloadError):
                enhancement.decode(payload[:n], base)
        rng = np.random.default_rng(3)
        caught = 0
        for _ in range(100):
            bad = bytearray(payload)
            i = int(rng.integers(len(bad) * 8))
            bad[i // 8] ^= 1 << (i % 8)
            try:
                enhancement.decode(bytes(bad), base)
            except PayloadError:
                caught += 1
        assert caught == 100  # CRC-8 catches every single-bit error


def test_the_registered_avif_restoration_is_named_only_where_it_brings_the_face_closer(sample_faces):
    """The committed network (``restore-avif-*``): every payload that names it decodes closer to the crop
    than the same stream without it, and at AVIF's lowest quality it is named for some faces."""
    from facecodec import base_layer

    assert restoration.for_codec("avif") is not None
    named = 0
    for _, f in sample_faces[:6]:
        base, crop = base_layer.encode(f.feature), face_crop(f.chip).astype(float)
        for q in (0, 30):
            payload = enhancement.encode(f.chip, base, "avif", q)
            h = enhancement.read_header(payload)
            if not h.restoration_tag:
                continue
            named += q == 0
            plain = _with_restoration_tag(payload, 0)
            restored_mse = np.mean((enhancement.decode(payload, base) - crop) ** 2)
            assert restored_mse < np.mean((enhancement.decode(plain, base) - crop) ** 2)
    assert named > 0
