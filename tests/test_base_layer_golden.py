"""Golden base-layer payloads: every format stays decodable bit for bit (wire and storage contract).

``tests/data/golden/base_layer_format<N>.json`` holds payloads written by the encoder of format N when
it was introduced, with the features they were made from and the features they decode to (float32,
little-endian hex). A decoder change that alters one decoded bit, or an encoder change that alters one
payload byte of a registered model, fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facecodec import base_layer

GOLDEN = Path(__file__).parent / "data" / "golden"
FILES = sorted(GOLDEN.glob("base_layer_format*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def f32(hexed: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexed), "<f4")


@pytest.fixture(params=FILES, ids=[p.stem for p in FILES])
def golden(request) -> dict:
    return load(request.param)


def test_golden_files_cover_every_format():
    assert {load(p)["format"] for p in FILES} >= set(base_layer.VERSIONS)


def test_golden_payloads_decode_bit_exactly(golden):
    for case in golden["cases"]:
        payload = bytes.fromhex(case["payload"])
        out = base_layer.decode(payload)
        assert payload[0] == 0xB0 | golden["format"]
        assert out.model == golden["model"] and out.step_index == case["step_index"] and out.nbytes == len(payload)
        assert out.feature.dtype == np.float32
        assert out.feature.astype("<f4").tobytes().hex() == case["decoded"], case["source"]


def test_golden_payloads_decode_bit_exactly_in_batches(golden):
    payloads = [bytes.fromhex(c["payload"]) for c in golden["cases"]]
    for engine_out, case in zip(base_layer.decode_many(payloads), golden["cases"]):
        assert np.array_equal(engine_out.feature, f32(case["decoded"])), case["source"]


def test_golden_features_encode_to_the_same_bytes(golden):
    model = base_layer.load_model(golden["model"])
    for case in golden["cases"]:
        codec = base_layer.BaseLayerCodec(model, case["step_index"])
        assert codec.compress(f32(case["feature"])).hex() == case["payload"], case["source"]
