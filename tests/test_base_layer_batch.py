"""Batch decoding. Format 1: the base layer's own rANS coder against CompressAI's (the reference; a
development dependency): ``rans_encode`` writes CompressAI's bytes, ``rans_decode_many`` reads them back
bit-exactly and marks what no encoder writes (escape symbols, wild states) as out of range. Format 2:
the compiled range decoder gives what the Python one gives, bodies and damaged bodies alike. Both:
``decode_many`` gives what ``decode`` gives, payload by payload, errors included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facecodec import base_layer, zoo
from facecodec.errors import PayloadError

ENGINES = ["numpy", "compiled"]


def newest_of_format(fmt: int) -> base_layer.BaseLayerModel:
    models = [base_layer.load_model(e.name) for e in zoo.entries(base_layer.KIND) if e.backend == "dlib-resnet-128"]
    return max((m for m in models if m.format == fmt), key=lambda m: m.tag)


@pytest.fixture(scope="module")
def model() -> base_layer.BaseLayerModel:
    """Format 1's model (CompressAI's rANS)."""
    return newest_of_format(1)


@pytest.fixture(scope="module")
def model2() -> base_layer.BaseLayerModel:
    """Format 2's model (the range coder)."""
    return newest_of_format(2)


def features(model, rng, n, scale=1.0):
    y = rng.normal(size=(n, model.dim)) * model.sigma * scale
    return (model.mean + y @ model.basis).astype(np.float32)


def compressai_symbols(model, step, bodies):
    """The reference: CompressAI's RansDecoder on each body."""
    from compressai import ans

    cdfs, lengths, offsets, _ = model.tables(step)
    padded = [b + bytes(16 * len(b) + 64 * model.dim) for b in bodies]  # it reads past short streams
    return np.stack([ans.RansDecoder().decode_with_indexes(p, list(range(model.dim)), cdfs, lengths, offsets)
                     for p in padded])


def compressai_stream(model, step, q):
    from compressai import ans

    cdfs, lengths, offsets, _ = model.tables(step)
    return ans.RansEncoder().encode_with_indexes(list(map(int, q)), list(range(model.dim)), cdfs, lengths, offsets)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.05, 6.0), step=st.integers(0, 13))
def test_property_encoder_writes_compressais_bytes(model, seed, scale, step):
    q = model.quantize(features(model, np.random.default_rng(seed), 1, scale)[0], step)
    cdfs, _, offsets, _ = model.tables(step)
    assert base_layer.rans_encode(q.tolist(), cdfs, offsets) == compressai_stream(model, step, q)


def test_the_edge_path_needs_neither_compressai_nor_numba(tmp_path):
    """Encoding a base layer and decoding one payload import neither (the edge image has no CompressAI)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from facecodec import base_layer; "
            "m = base_layer.get_codec('dlib-resnet-128').model; p = base_layer.encode(m.mean.astype('float32')); "
            "base_layer.decode(p); print(sorted(x for x in ('compressai', 'numba', 'torch', 'scipy') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


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
def test_property_random_bodies_decode_as_compressai_or_out_of_range(model, engine, seed, step):
    """Arbitrary words (reads past the end included): every row ours gives inside the model's range is
    CompressAI's; wild first states (and escape symbols, which CompressAI reads as raw bits) give a
    row ``decode`` refuses (a component beyond the range)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, model.dim + 3, size=40) * 4
    bodies = [rng.bytes(int(k)) for k in lengths]
    half = model.tables(step)[3]
    ours = base_layer.rans_decode_many(model, step, bodies, engine)
    theirs = compressai_symbols(model, step, bodies)
    wild = np.asarray([int.from_bytes(b[4:8], "little") >= 1 << 31 for b in bodies])
    kept = ~(np.abs(ours) > half).any(1)
    assert np.array_equal(ours[kept], theirs[kept])
    assert not kept[wild].any()


@pytest.mark.parametrize("engine", ENGINES)
def test_escape_coded_symbols_are_out_of_range(model, engine):
    """Streams holding the escape (bypass) symbol, which this encoder never writes, beside plain ones:
    the plain ones decode as CompressAI decodes them, the others are refused."""
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
    escaped = np.arange(48) % 3 == 0
    assert np.array_equal(got[~escaped], compressai_symbols(model, step, bodies)[~escaped])
    assert (np.abs(got) > half).any(1).tolist() == escaped.tolist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.05, 6.0), step=st.integers(0, 15), n=st.integers(1, 80))
def test_property_compiled_range_decoder_gives_the_symbols(model2, seed, scale, step, n):
    step %= len(model2.steps)
    rng = np.random.default_rng(seed)
    codec = base_layer.BaseLayerCodec(model2, step)
    feats = features(model2, rng, n, scale)
    bodies = [base_layer.wire_body(codec.compress(f)) for f in feats]
    want = np.stack([model2.quantize(f, step) for f in feats])
    for engine in ENGINES:
        assert np.array_equal(base_layer.range_decode_many(model2, step, bodies, engine), want)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), step=st.integers(0, 15))
def test_property_damaged_range_bodies_decode_alike_in_both_engines(model2, seed, step):
    """Random bytes, truncations, flipped bits and appended bytes: both engines give the same rows, and a
    row inside the model's range is one the encoder writes those very bytes for."""
    step %= len(model2.steps)
    rng = np.random.default_rng(seed)
    codec = base_layer.BaseLayerCodec(model2, step)
    good = [base_layer.wire_body(codec.compress(f)) for f in features(model2, rng, 20)]
    bodies = [rng.bytes(int(k)) for k in rng.integers(0, 2 * model2.components, size=20)]
    for b in good:
        flipped = bytearray(b)
        if flipped:
            i = int(rng.integers(8 * len(b)))
            flipped[i // 8] ^= 1 << (i % 8)
        bodies += [b[: int(rng.integers(0, len(b) + 1))], bytes(flipped), b + rng.bytes(1)]
    half = model2.tables(step)[3]
    numpy_rows = base_layer.range_decode_many(model2, step, bodies, "numpy")
    compiled_rows = base_layer.range_decode_many(model2, step, bodies, "compiled")
    assert np.array_equal(numpy_rows, compiled_rows)
    for body, q in zip(bodies, numpy_rows):
        if not (np.abs(q) > half).any():
            cdfs, _, offsets, _ = model2.tables(step)
            assert base_layer.range_encode(q.tolist(), cdfs, offsets) == body


@pytest.mark.parametrize("fmt", [1, 2])
def test_decode_many_gives_what_decode_gives_payload_by_payload(fmt):
    model = newest_of_format(fmt)
    rng = np.random.default_rng(3)
    good = [base_layer.BaseLayerCodec(model, s).compress(f) for s in (model.default_step, 2)
            for f in features(model, rng, 29)]
    bad = [b"", b"\x00" * 3, good[0][:-4], good[1][:3] + b"\x00\x00" + good[1][5:],
           bytes([0xB2]) + good[2][1:],  # unknown version
           good[3][:2] + bytes([(good[3][2] + 1) % 256]) + good[3][3:],  # unknown model tag
           with_crc(good[4][:3], rng.bytes(4 * (model.dim + 3))),  # longer than any stream
           with_crc(bytes([good[5][0], (good[5][1] & 0xF0) | 15, good[5][2]]), good[5][5:])]  # step off the ladder
    bad += [with_crc(good[6][:3], rng.bytes(4 * int(k))) for k in rng.integers(2, model.dim + 3, size=60)]
    if fmt == 2:  # damaged bodies with their CRC-8 recomputed reach the range decoder
        wire = base_layer.from_wire
        bad += [wire(good[7][:3], base_layer.wire_body(good[7]) + b"\0"),
                wire(good[8][:3], rng.bytes(2 * model.components + 9))]
        bad += [wire(good[9][:3], rng.bytes(int(k))) for k in rng.integers(0, 2 * model.components, size=60)]
        bad += [wire(g[:3], base_layer.wire_body(g)[: int(rng.integers(0, len(g) - 4))]) for g in good[10:30]]
        other = base_layer.BaseLayerCodec(newest_of_format(1))
        bad += [other.compress(f) for f in features(model, rng, 5)]  # the other format in the same call
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


def test_decode_many_of_nothing_and_of_one(model2):
    assert base_layer.decode_many([]) == []
    p = base_layer.encode(features(model2, np.random.default_rng(1), 1)[0], "dlib-resnet-128")
    (one,) = base_layer.decode_many([p])
    assert np.array_equal(one.feature, base_layer.decode(p).feature)
