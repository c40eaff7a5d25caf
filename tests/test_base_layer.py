"""Base-layer codec: real round trips of both payload formats (rANS and CRC-16 in format 1, the range
coder of format 2) and clean rejection of bad payloads (paper 3.1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facecodec import base_layer, zoo
from facecodec.errors import (
    CorruptPayloadError,
    PayloadError,
    TruncatedPayloadError,
    UnknownFormatError,
    UnknownModelError,
)


def newest_of_format(fmt: int) -> base_layer.BaseLayerModel:
    """The registered dlib model of payload format ``fmt`` with the highest tag."""
    models = [base_layer.load_model(e.name) for e in zoo.entries(base_layer.KIND) if e.backend == "dlib-resnet-128"]
    return max((m for m in models if m.format == fmt), key=lambda m: m.tag)


@pytest.fixture(scope="module")
def codec() -> base_layer.BaseLayerCodec:
    return base_layer.get_codec("dlib-resnet-128")


@pytest.fixture(scope="module", params=[1, 2], ids=["format1", "format2"])
def model(request) -> base_layer.BaseLayerModel:
    return newest_of_format(request.param)


def realistic(model, rng, n=1):
    """Features drawn from the model's own distribution (mean + per-component scales)."""
    y = rng.normal(size=(n, model.dim)) * model.sigma
    return (model.mean + y @ model.basis).astype(np.float32)


def test_the_default_model_writes_format_2(codec):
    assert codec.model.format == 2 and codec.model.components < codec.model.dim


def test_round_trip_is_within_half_a_step_per_component(model):
    rng = np.random.default_rng(0)
    for s in range(len(model.steps)):
        codec = base_layer.BaseLayerCodec(model, s)
        f = realistic(model, rng)[0]
        out = codec.decompress(codec.compress(f))
        err = (out.feature - f) @ model.coded_basis.T  # error in the transform domain, on the coded components
        assert np.all(np.abs(err) <= model.steps[s] / 2 + 1e-4)
        dropped = (out.feature - model.mean) @ model.basis[model.components :].T
        assert np.all(np.abs(dropped) < 1e-5)  # components not coded decode as the mean
        assert out.step == pytest.approx(model.steps[s])
        assert out.backend == "dlib-resnet-128"


def test_sample_faces_fit_in_twenty_bytes_at_the_default_step(codec, sample_features):
    _, feats = sample_features
    sizes = [len(codec.compress(f)) for f in feats]
    assert max(sizes) <= 24 and np.mean(sizes) <= 20


def test_format_1_sample_faces_fit_in_forty_bytes_at_its_default_step(sample_features):
    codec = base_layer.BaseLayerCodec(newest_of_format(1))
    sizes = [len(codec.compress(f)) for f in sample_features[1]]
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
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.1, 3.0), step=st.integers(0, 15))
def test_property_random_features_round_trip(model, seed, scale, step):
    step %= len(model.steps)
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
        if i % 3 == 0 and data:  # a third start with a valid-looking header of either format
            data = bytes([0xB1 + i % 2, 0x17 - i % 2]) + data[2:]
        try:
            base_layer.decode(data)
        except PayloadError:
            rejected += 1
    assert rejected == 10_000


def test_format_1_rejects_every_truncation(sample_features):
    payload = base_layer.BaseLayerCodec(newest_of_format(1)).compress(sample_features[1][0])
    for n in range(len(payload)):
        with pytest.raises(PayloadError):
            base_layer.decode(payload[:n])


def test_format_1_rejects_every_single_bit_flip(sample_features):
    payload = base_layer.BaseLayerCodec(newest_of_format(1)).compress(sample_features[1][3])
    for i in range(len(payload) * 8):
        bad = bytearray(payload)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(PayloadError):
            base_layer.decode(bytes(bad))


def test_format_2_rejects_every_truncation_and_single_bit_flip(codec, sample_features):
    payload = codec.compress(sample_features[1][3])
    for n in range(len(payload)):
        with pytest.raises(PayloadError):
            base_layer.decode(payload[:n])
    for i in range(len(payload) * 8):
        bad = bytearray(payload)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(PayloadError):
            base_layer.decode(bytes(bad))


def test_format_2_accepts_only_what_its_encoder_writes(codec, sample_features):
    """Damage that gets past the one-byte checksum (here: whatever keeps it right) is refused, or it is
    exactly the payload its decoded feature encodes to (the stream is canonical), never anything else."""
    rng = np.random.default_rng(5)
    refused = tried = 0
    for f in sample_features[1][:12]:
        payload = codec.compress(f)
        damaged = [payload[:n] for n in range(len(payload))]
        for i in range(8 * len(payload)):
            bad = bytearray(payload)
            bad[i // 8] ^= 1 << (i % 8)
            damaged.append(bytes(bad))
        damaged += [payload + bytes([int(rng.integers(1, 256))]), payload + b"\0"]
        for bad in damaged:
            if len(bad) > 4:  # what a damage that the CRC-8 misses looks like: the checksum still right
                bad = bad[:3] + bytes([base_layer._crc8(bad[:3] + bad[4:])]) + bad[4:]
            tried += 1
            try:
                out = base_layer.decode(bad)
            except PayloadError:
                refused += 1
                continue
            again = base_layer.BaseLayerCodec(base_layer.load_model(out.model), out.step_index)
            assert again.compress(out.feature) == bad
            assert out.nbytes == len(bad)
    assert refused > tried // 4


def test_format_2_refuses_a_trailing_zero_byte_and_overlong_bodies(codec, sample_features):
    payload = codec.compress(sample_features[1][0])
    assert payload[-1] != 0
    with pytest.raises(CorruptPayloadError, match="zero byte"):
        base_layer.decode(base_layer.from_wire(payload[:3], base_layer.wire_body(payload) + b"\0"))
    longest = base_layer.max_body_bytes(codec.model)
    with pytest.raises(CorruptPayloadError, match="longer"):
        base_layer.decode(base_layer.from_wire(payload[:3], b"\x01" * (longest + 1)))


def test_a_payload_naming_a_model_of_the_other_format_is_refused(sample_features):
    one, two = newest_of_format(1), newest_of_format(2)
    p1 = base_layer.BaseLayerCodec(one).compress(sample_features[1][0])
    p2 = base_layer.BaseLayerCodec(two).compress(sample_features[1][0])
    with pytest.raises(UnknownModelError, match="format"):
        base_layer.decode(bytes([0xB2]) + p1[1:])
    with pytest.raises(UnknownModelError, match="format"):
        base_layer.decode(bytes([0xB1, p2[1], two.tag]) + p2[3:])


def test_wire_body_and_from_wire_give_the_payload_back(model, sample_features):
    """facewire.v2 carries the body only; the Hello's three header bytes rebuild the payload."""
    codec = base_layer.BaseLayerCodec(model)
    for f in sample_features[1][:8]:
        payload = codec.compress(f)
        head = base_layer.header_bytes(model, codec.step_index)
        assert payload[:3] == head
        body = base_layer.wire_body(payload)
        assert len(body) == len(payload) - (5 if model.format == 1 else 4)
        assert base_layer.from_wire(head, body) == payload


def test_unknown_version_backend_and_model_have_their_own_errors(codec, sample_features):
    payload = bytearray(codec.compress(sample_features[1][0]))
    with pytest.raises(UnknownFormatError, match="version"):
        base_layer.decode(bytes([0xB3]) + bytes(payload[1:]))
    with pytest.raises(UnknownFormatError, match="backend"):
        base_layer.decode(bytes([payload[0], 0xF0 | (payload[1] & 0x0F)]) + bytes(payload[2:]))
    with pytest.raises(UnknownModelError):
        base_layer.decode(bytes(payload[:2]) + bytes([(payload[2] + 1) % 256]) + bytes(payload[3:]))
    with pytest.raises(TruncatedPayloadError):
        base_layer.decode(b"")
    with pytest.raises(UnknownFormatError):
        base_layer.decode("not bytes")  # type: ignore[arg-type]


def test_format_1_checksum_catches_a_body_swap(sample_features):
    codec = base_layer.BaseLayerCodec(newest_of_format(1))
    a = codec.compress(sample_features[1][0])
    b = codec.compress(sample_features[1][20])
    with pytest.raises(PayloadError):
        base_layer.decode(a[:5] + b[5:])


def test_header_describes_the_payload(model, sample_features):
    codec = base_layer.BaseLayerCodec(model)
    payload = codec.compress(sample_features[1][0])
    h = base_layer.read_header(payload)
    assert (h.version, h.backend, h.step_index, h.model_tag) == (model.format, "dlib-resnet-128", codec.step_index,
                                                                 model.tag)


def test_a_model_file_keeps_its_format_and_components(model, tmp_path):
    model.save(tmp_path / "m.npz")
    again = base_layer.BaseLayerModel.from_file(tmp_path / "m.npz", "again")
    assert (again.format, again.components, again.family) == (model.format, model.components, model.family)
    for k in range(len(model.steps)):
        assert again.tables(k)[0] == model.tables(k)[0]


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
                                  values["steps"], model.family, fmt=model.format, components=model.components)


def test_format_2_codes_an_all_minimum_feature_in_its_header_alone(codec):
    """Every component clipped to its lowest symbol: the final interval holds 0, no byte is written."""
    m = codec.model
    f = (m.mean - 100 * m.coded_basis.sum(0)).astype(np.float32)
    payload = codec.compress(f)
    assert len(payload) == 4
    out = base_layer.decode(payload)
    assert np.array_equal(m.quantize(out.feature, codec.step_index), -m.tables(codec.step_index)[3])
    (batch,) = base_layer.decode_many([payload])
    assert np.array_equal(batch.feature, out.feature)
    for short in (payload[:1], payload[:2], payload[:3]):
        with pytest.raises(TruncatedPayloadError):
            base_layer.decode(short)


def test_comparable_features_are_what_the_default_codec_delivers(codec, sample_features):
    feats = sample_features[1][:5]
    got = base_layer.comparable(feats)
    assert got.shape == feats.shape and got.dtype == np.float32
    for f, g in zip(feats, got):
        assert np.array_equal(g, codec.decompress(codec.compress(f)).feature)
    assert np.array_equal(base_layer.comparable(got), got)  # decoded features stay as they are
    assert base_layer.comparable(feats[0]).shape == (128,)
