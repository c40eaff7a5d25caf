"""Batch decoding of base layers: ``rans_decode_many`` is bit-exact with CompressAI's rANS decoder,
and ``decode_many`` gives what ``decode`` gives, payload by payload, errors included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facecodec import base_layer
from facecodec.errors import PayloadError

ENGINES = ["numpy", "compiled"]


@pytest.fixture(scope="module")
def model() -> base_layer.BaseLayerModel:
    return base_layer.get_codec("dlib-resnet-128").model


def features(model, rng, n, scale=1.0):
    y = rng.normal(size=(n, model.dim)) * model.sigma * scale
    return (model.mean + y @ model.basis).astype(np.float32)


def compressai_symbols(model, step, bodies):
    """The reference: CompressAI's RansDecoder on each body (what ``decode`` runs)."""
    codec = base_layer.BaseLayerCodec(model, step)
    return np.stack([codec.decode_symbols(b, step) for b in bodies])


def with_crc(head: bytes, body: bytes) -> bytes:
    return head + base_layer._crc(head + body).to_bytes(2, "big") + body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.05, 6.0), step=st.integers(0, 13), n=st.integers(1, 80))
@pytest.mark.parametrize("engine", ENGINES)
def test_property_vectorised_rans_is_bit_exact_with_compressai(model, engine, seed, scale, step, n):
    rng = np.random.default_rng(seed)
    codec = base_layer.BaseLayerCodec(model, step)
    bodies = [codec.compress(f)[base_layer.HEADER_BYTES:] for f in features(model, rng, n, scale)]
    got = base_layer.rans_decode_many(model, step, bodies, engine)
    assert got.shape == (n, model.dim)
    assert np.array_equal(got, compressai_symbols(model, step, bodies))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), step=st.integers(0, 13))
@pytest.mark.parametrize("engine", ENGINES)
def test_property_random_bodies_decode_as_compressai_decodes_them(model, engine, seed, step):
    """Arbitrary words: wild initial states, escape symbols, reads past the end, all as CompressAI."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, model.dim + 3, size=40) * 4
    bodies = [rng.bytes(int(k)) for k in lengths]
    assert np.array_equal(base_layer.rans_decode_many(model, step, bodies, engine),
                          compressai_symbols(model, step, bodies))


@pytest.mark.parametrize("engine", ENGINES)
def test_escape_coded_symbols_fall_back_to_compressai(model, engine):
    """Streams holding the escape (bypass) symbol, which only CompressAI decodes, beside plain ones."""
    from compressai import ans

    step = model.default_step
    cdfs, lengths, offsets, half = model.tables(step)
    rng = np.random.default_rng(7)
    codec = base_layer.BaseLayerCodec(model, step)
    bodies = []
    for k in range(48):
        q = codec.model.quantize(features(model, rng, 1)[0], step)
        if k % 3 == 0:  # out of the alphabet: CompressAI codes it with the escape symbol and raw bits
            i = int(rng.integers(model.dim))
            q[i] = int(half[i]) + int(rng.integers(1, 5000)) * (1 if k % 2 else -1)
        bodies.append(ans.RansEncoder().encode_with_indexes(q.tolist(), list(range(model.dim)), cdfs, lengths,
                                                            offsets))
    got = base_layer.rans_decode_many(model, step, bodies, engine)
    assert np.array_equal(got, compressai_symbols(model, step, bodies))
    assert (np.abs(got) > half).any(1).sum() == 16  # the escaped values came back, out of range


def test_decode_many_gives_what_decode_gives_payload_by_payload(model):
    rng = np.random.default_rng(3)
    good = [base_layer.encode(f, "dlib-resnet-128", s) for s in (model.default_step, 2)
            for f in features(model, rng, base_layer.VECTOR_MIN + 5)]
    bad = [b"", b"\x00" * 3, good[0][:-4], good[1][:3] + b"\x00\x00" + good[1][5:],
           bytes([0xB2]) + good[2][1:],  # unknown version
           good[3][:2] + bytes([(good[3][2] + 1) % 256]) + good[3][3:],  # unknown model tag
           with_crc(good[4][:3], rng.bytes(4 * (model.dim + 3))),  # longer than any stream
           with_crc(bytes([good[5][0], (good[5][1] & 0xF0) | 15, good[5][2]]), good[5][5:])]  # step off the ladder
    bad += [with_crc(good[6][:3], rng.bytes(4 * int(k))) for k in rng.integers(2, model.dim + 3, size=60)]
    payloads = good + bad
    order = rng.permutation(len(payloads))
    payloads = [payloads[i] for i in order]
    out = base_layer.decode_many(payloads)
    assert len(out) == len(payloads)
    for p, got in zip(payloads, out):
        try:
            want = base_layer.decode(p)
        except PayloadError as e:
            assert type(got) is type(e) and str(got) == str(e)
            continue
        assert not isinstance(got, Exception)
        assert got.feature.dtype == np.float32  # one matrix product against decode's per-row sums: 1 ulp at most
        np.testing.assert_array_max_ulp(got.feature, want.feature, maxulp=1)
        assert (got.backend, got.model, got.step_index, got.step, got.nbytes) == \
               (want.backend, want.model, want.step_index, want.step, want.nbytes)
    assert sum(not isinstance(r, Exception) for r in out) >= len(good)


def test_decode_many_of_nothing_and_of_one(model):
    assert base_layer.decode_many([]) == []
    p = base_layer.encode(features(model, np.random.default_rng(1), 1)[0], "dlib-resnet-128")
    (one,) = base_layer.decode_many([p])
    assert np.array_equal(one.feature, base_layer.decode(p).feature)
