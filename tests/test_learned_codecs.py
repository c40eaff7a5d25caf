"""Learned enhancement codecs (paper 3.3): the shipped rate points round-trip through the
enhancement layer, rates are ordered, and bad streams are typed errors, never crashes."""

from __future__ import annotations

import binascii

import numpy as np
import pytest

from eval.metrics import psnr
from facecodec import enhancement, learned, zoo
from facecodec.crop import face_crop
from facecodec.errors import PayloadError, UnknownModelError
from facecodec.image_codecs import CODECS

VARIANTS = [("learned", "residual"), ("conditional", "conditional")]


@pytest.fixture(scope="module")
def face(sample_faces):
    from facecodec import base_layer

    f = sample_faces[2][1]
    return f.chip, base_layer.encode(f.feature)


@pytest.mark.parametrize("codec,variant", VARIANTS)
def test_every_shipped_rate_point_round_trips_the_crop_through_the_enhancement_layer(face, codec, variant):
    chip, base = face
    qualities = CODECS[codec].qualities
    assert qualities == learned.qualities(variant) and len(qualities) >= 2
    for q in qualities:
        payload = enhancement.encode(chip, base, codec, q)
        h = enhancement.read_header(payload)
        assert (h.codec, h.quality) == (codec, q)
        out = enhancement.decode(payload, base)
        assert out.shape == (112, 112, 3) and out.dtype == np.uint8
        assert psnr(out, face_crop(chip)) > 20  # far above the 16-17 dB of the prediction alone


@pytest.mark.parametrize("codec,variant", VARIANTS)
def test_higher_rate_points_cost_more_bytes(face, codec, variant):
    chip, base = face
    sizes = [len(enhancement.encode(chip, base, codec, q)) for q in CODECS[codec].qualities]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_the_same_payload_decodes_to_the_same_pixels_twice(face):
    chip, base = face
    payload = enhancement.encode(chip, base, "conditional", CODECS["conditional"].qualities[0])
    assert np.array_equal(enhancement.decode(payload, base), enhancement.decode(payload, base))


def test_an_unregistered_rate_point_is_an_unknown_model_error(face):
    chip, base = face
    with pytest.raises(UnknownModelError):
        enhancement.encode(chip, base, "learned", 99)


def test_the_entropy_tables_ship_in_the_weights_files_at_full_precision():
    import torch

    for variant in ("residual", "conditional"):
        for e in zoo.entries(learned.KINDS[variant]):
            state = torch.load(zoo.model_path(e.name), map_location="cpu", weights_only=False)["state"]
            cdf = state["entropy_bottleneck._quantized_cdf"]
            assert cdf.dtype == torch.int32 and cdf.numel() > 0
            assert state["entropy_bottleneck.quantiles"].dtype == torch.float32


def test_the_shipped_learned_codecs_fit_the_40_mb_budget():
    total = sum(zoo.model_path(e.name).stat().st_size for v in learned.KINDS.values() for e in zoo.entries(v))
    assert 0 < total <= 40 * 2**20


@pytest.mark.parametrize("codec,variant", VARIANTS)
def test_random_streams_with_a_valid_checksum_are_payload_errors_or_images_never_crashes(face, codec, variant):
    """The CRC stops random corruption; this forges payloads past it, as a hostile edge could."""
    _, base = face
    rng = np.random.default_rng(7)
    good = enhancement.encode(face[0], base, codec, CODECS[codec].qualities[0])
    size = enhancement.read_header(good).size
    outcomes = set()
    for n in [1, 2, 3, 5, 8, 13, 50, 300, 3000] * 4:
        body = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        head = good[: size - 2]
        forged = head + binascii.crc_hqx(head + body, 0xFFFF).to_bytes(2, "big") + body
        try:
            out = enhancement.decode(forged, base)
            assert out.shape == (112, 112, 3) and out.dtype == np.uint8
            outcomes.add("image")
        except PayloadError:
            outcomes.add("error")
    assert outcomes  # reached only if no input crashed the process
