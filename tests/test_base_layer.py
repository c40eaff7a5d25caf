"""Base-layer codec: real rANS round trips and clean rejection of bad payloads (paper 3.1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facecodec import base_layer
from facecodec.errors import (
    PayloadError,
    TruncatedPayloadError,
    UnknownFormatError,
    UnknownModelError,
)


@pytest.fixture(scope="module")
def codec() -> base_layer.BaseLayerCodec:
    return base_layer.get_codec("dlib-resnet-128")


@pytest.fixture(scope="module")
def model(codec) -> base_layer.BaseLayerModel:
    return codec.model


def realistic(model, rng, n=1):
    """Features drawn from the model's own distribution (mean + PCA scales)."""
    y = rng.normal(size=(n, model.dim)) * model.sigma
    return (model.mean + y @ model.basis).astype(np.float32)


def test_round_trip_is_within_half_a_step_per_component(model):
    rng = np.random.default_rng(0)
    for s in range(len(model.steps)):
        codec = base_layer.BaseLayerCodec(model, s)
        f = realistic(model, rng)[0]
        out = codec.decompress(codec.compress(f))
        err = (out.feature - f) @ model.basis.T  # error in the transform domain
        assert np.all(np.abs(err) <= model.steps[s] / 2 + 1e-4)
        assert out.step == pytest.approx(model.steps[s])
        assert out.backend == "dlib-resnet-128"


def test_sample_faces_fit_in_forty_bytes_at_the_default_step(codec, sample_features):
    _, feats = sample_features
    sizes = [len(codec.compress(f)) for f in feats]
    assert max(sizes) <= 44 and np.mean(sizes) <= 40


def test_coarser_steps_give_shorter_payloads(model, sample_features):
    _, feats = sample_features
    sizes = [np.mean([len(base_layer.BaseLayerCodec(model, s).compress(f)) for f in feats]) for s in range(len(model.steps))]
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] > 2 * sizes[-1]


def test_decoded_feature_keeps_identity(codec, sample_features):
    people, feats = sample_features
    dec = np.stack([codec.decompress(codec.compress(f)).feature for f in feats])
    d = np.linalg.norm(dec[:, None] - dec[None], axis=2)
    same = np.array(people)[:, None] == np.array(people)[None]
    off = ~np.eye(len(people), dtype=bool)
    assert d[same & off].mean() < 0.45 < d[~same].mean()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.1, 3.0), step=st.integers(0, 13))
def test_property_random_features_round_trip(model, seed, scale, step):
    rng = np.random.default_rng(seed)
    f = realistic(model, rng)[0] * np.float32(scale)
    codec = base_layer.BaseLayerCodec(model, step)
    payload = codec.compress(f)
    decoded = base_layer.decode(payload)
    q = model.quantize(f, step)
    assert np.array_equal(model.quantize(decoded.feature, step), q)
    assert decoded.nbytes == len(payload)


def test_ten_thousand_random_byte_strings_raise_only_payload_errors():
    rng = np.random.default_rng(1)
    rejected = 0
    for i in range(10_000):
        data = rng.bytes(int(rng.integers(0, 80)))
        if i % 3 == 0 and data:  # a third start with a valid-looking header
            data = bytes([0xB1, 0x17]) + data[2:]
        try:
            base_layer.decode(data)
        except PayloadError:
            rejected += 1
    assert rejected == 10_000


def test_every_truncation_is_rejected(codec, sample_features):
    payload = codec.compress(sample_features[1][0])
    for n in range(len(payload)):
        with pytest.raises(PayloadError):
            base_layer.decode(payload[:n])


def test_every_single_bit_flip_is_rejected(codec, sample_features):
    payload = codec.compress(sample_features[1][3])
    for i in range(len(payload) * 8):
        bad = bytearray(payload)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(PayloadError):
            base_layer.decode(bytes(bad))


def test_unknown_version_backend_and_model_have_their_own_errors(codec, sample_features):
    payload = bytearray(codec.compress(sample_features[1][0]))
    with pytest.raises(UnknownFormatError, match="version"):
        base_layer.decode(bytes([0xB2]) + bytes(payload[1:]))
    with pytest.raises(UnknownFormatError, match="backend"):
        base_layer.decode(bytes([payload[0], 0xF0 | (payload[1] & 0x0F)]) + bytes(payload[2:]))
    with pytest.raises(UnknownModelError):
        base_layer.decode(bytes(payload[:2]) + bytes([(payload[2] + 1) % 256]) + bytes(payload[3:]))
    with pytest.raises(TruncatedPayloadError):
        base_layer.decode(b"")
    with pytest.raises(UnknownFormatError):
        base_layer.decode("not bytes")  # type: ignore[arg-type]


def test_checksum_catches_a_body_swap(codec, sample_features):
    a = codec.compress(sample_features[1][0])
    b = codec.compress(sample_features[1][20])
    with pytest.raises(PayloadError):
        base_layer.decode(a[:5] + b[5:])


def test_header_describes_the_payload(codec, sample_features):
    payload = codec.compress(sample_features[1][0])
    h = base_layer.read_header(payload)
    assert (h.version, h.backend, h.step_index, h.model_tag) == (1, "dlib-resnet-128", codec.step_index, codec.model.tag)


def test_non_finite_or_wrong_shape_features_are_refused(codec):
    from facecodec.errors import FaceCodecError

    with pytest.raises(FaceCodecError):
        codec.compress(np.full(128, np.nan, np.float32))
    with pytest.raises(FaceCodecError):
        codec.compress(np.zeros(64, np.float32))


@pytest.mark.parametrize("part", ["mean", "basis", "sigma", "steps"])
def test_a_model_with_non_finite_values_is_refused_at_load(model, part):
    """So every decoded feature is finite: the server does not check each one (validation.decode_feature)."""
    values = {"mean": model.mean, "basis": model.basis, "sigma": model.sigma, "steps": model.steps}
    values[part] = values[part].copy()
    values[part].flat[0] = np.inf if part == "steps" else np.nan
    with pytest.raises(ValueError, match="finite"):
        base_layer.BaseLayerModel("broken", model.backend, values["mean"], values["basis"], values["sigma"],
                                  values["steps"], model.family)
