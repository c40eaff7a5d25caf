"""Enhancement layer and scalable container: real image-codec round trips, clean rejection."""

from __future__ import annotations

import numpy as np
import pytest

from eval.metrics import psnr
from facecodec import container, enhancement
from facecodec.crop import face_crop
from facecodec.errors import PayloadError
from facecodec.image_codecs import CODECS


@pytest.fixture(scope="module")
def face(sample_faces):
    from facecodec import base_layer

    f = sample_faces[0][1]
    return f.chip, base_layer.encode(f.feature)


@pytest.mark.parametrize("codec,quality,floor", [("jpeg", 75, 32), ("jpeg2000", 36, 30), ("webp", 75, 32), ("avif", 60, 32)])
def test_each_codec_round_trips_the_crop_above_a_quality_floor(face, codec, quality, floor):
    chip, base = face
    payload = enhancement.encode(chip, base, codec, quality)
    out = enhancement.decode(payload, base)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert psnr(out, face_crop(chip)) > floor
    assert enhancement.read_header(payload).codec == codec


def test_png_enhancement_is_lossless_up_to_the_8_bit_normalisation(face):
    chip, base = face
    out = enhancement.decode(enhancement.encode(chip, base, "png", 0), base).astype(int)
    # eq. 4 maps the residual's [min, max] onto 8 bits: exact for a span of 255 levels or less
    # (no prediction), within one level for a span up to 510 (with the reconstruction)
    assert np.abs(out - face_crop(chip).astype(int)).max() <= 1
    plain = enhancement.decode(enhancement.encode(chip, None, "png", 0), None)
    assert np.array_equal(plain, face_crop(chip))


def test_higher_quality_costs_more_bytes_and_gives_more_fidelity(face):
    chip, base = face
    lo, hi = (enhancement.encode(chip, base, "webp", q) for q in (10, 90))
    assert len(lo) < len(hi)
    assert psnr(enhancement.decode(lo, base), face_crop(chip)) < psnr(enhancement.decode(hi, base), face_crop(chip))


def test_enhancement_truncations_and_bit_flips_raise_payload_errors(face):
    chip, base = face
    payload = enhancement.encode(chip, base, "jpeg", 50)
    for n in range(0, len(payload), 7):
        with pytest.raises(PayloadError):
            enhancement.decode(payload[:n], base)
    rng = np.random.default_rng(0)
    for _ in range(200):
        bad = bytearray(payload)
        i = int(rng.integers(len(bad) * 8))
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(PayloadError):
            enhancement.decode(bytes(bad), base)


def test_random_bytes_raise_only_payload_errors():
    rng = np.random.default_rng(2)
    for i in range(3000):
        data = rng.bytes(int(rng.integers(0, 64)))
        if i % 2:
            data = bytes([0xE1, 1]) + data[2:]
        with pytest.raises(PayloadError):
            enhancement.decode(data, None)
        with pytest.raises(PayloadError):
            container.unpack(data)


def test_container_keeps_each_layer_decodable_on_its_own(face):
    chip, base = face
    enh = [enhancement.encode(chip, base, "webp", q) for q in (20, 80)]
    data = container.pack(container.ScalableFace(base, enh))
    back = container.unpack(data)
    assert back.base == base and back.enhancements == enh
    hi = container.decode_image(data, "full", 1)
    assert psnr(hi, face_crop(chip)) == pytest.approx(psnr(enhancement.decode(enh[1], base), face_crop(chip)))
    for n in range(len(data)):
        with pytest.raises(PayloadError):
            container.unpack(data[:n])


def test_every_registered_image_codec_has_a_distinct_code():
    assert len({c.code for c in CODECS.values()}) == len(CODECS)


@pytest.mark.parametrize("codec,quality", [("jpeg", 30), ("avif", 30), ("jpeg2000", 30)])
def test_header_dictionary_makes_the_layer_smaller_and_decodes_the_same(face, codec, quality):
    from facecodec import headers

    chip, base = face
    plain = enhancement.encode(chip, base, codec, quality, compact=False, mode="residual")  # the choice counts bytes
    small = enhancement.encode(chip, base, codec, quality, mode="residual")
    assert enhancement.read_header(small).dictionary_tag == headers.default_tag() != 0
    assert len(small) < len(plain) - 100
    assert np.array_equal(enhancement.decode(small, base), enhancement.decode(plain, base))


def test_format_version_1_payloads_still_decode(face):
    import binascii

    chip, base = face
    v2 = enhancement.encode(chip, base, "webp", 50, compact=False, version=2)
    h = enhancement.read_header(v2)
    head = bytes([0xE1]) + v2[1:8]
    v1 = head + binascii.crc_hqx(head + v2[h.size:], 0xFFFF).to_bytes(2, "big") + v2[h.size:]
    assert np.array_equal(enhancement.decode(v1, base), enhancement.decode(v2, base))


def test_a_corrupt_compact_header_is_a_payload_error():
    from facecodec import headers

    d = headers.dictionary(headers.default_tag())
    for bad in (b"", b"\xff\xff\xff\xff", b"\x05abc", b"\x03\xff\xff\xff" + b"x" * 10):
        with pytest.raises(PayloadError):
            headers.expand(bad, d)


def test_the_reconstruction_subtracted_at_encode_is_added_back_at_decode(face):
    from facecodec import reconstruction, zoo

    chip, base = face
    payload = enhancement.encode(chip, base, "png", 0, mode="residual")  # lossless: the choice would code the crop
    assert enhancement.read_header(payload).predictor_tag == zoo.entry(reconstruction.default_name("prediction")).tag != 0
    out = enhancement.decode(payload, base).astype(int)
    # 8-bit normalisation of a residual of magnitude up to 255 levels loses at most one level
    assert np.abs(out - face_crop(chip).astype(int)).max() <= 1


def test_encoder_settings_change_the_stream_but_not_how_it_decodes(face):
    from facecodec.image_codecs import image_codec, substituted

    avif = image_codec("avif")
    slower = avif.with_options(speed=3, subsampling="4:4:4")
    crop = face_crop(face[0])
    assert slower.encode(crop, 30) != avif.encode(crop, 30)
    assert psnr(avif.decode(slower.encode(crop, 30), crop.shape[:2]), crop) > 28
    with substituted(slower):
        payload = enhancement.encode(face[0], face[1], "avif", 30)
        assert image_codec("avif") is slower
    assert image_codec("avif") is avif
    assert psnr(enhancement.decode(payload, face[1]), crop) > 28
