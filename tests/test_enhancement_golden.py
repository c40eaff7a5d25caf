"""Golden enhancement payloads and golden scalable containers: every format stays decodable
(``tests/data/golden/enhancement_and_container.json``, made once by ``make_enhancement_golden.py``, for
formats 1 and 2; ``enhancement_format3.json``, made once by ``make_enhancement_format3_golden.py``;
``enhancement_restoration.json``, by ``make_restoration_golden.py``, for the restoration networks).

For each conventional codec, a payload of format 2 (container header deflated against the registered
dictionary) and of format 1 (the first header, no dictionary), each predicted from a frozen base layer;
and one container with two enhancement layers. Format 3: each codec in both modes (residual, direct), from
the format-2 golden base layer of the same face, and a container of two format-3 layers. Decoding must
give the same pixels, bit for bit (their
SHA-256), as when they were made: a change to the header dictionary, the prediction head, the
normalisation or a codec's decoding shows here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from facecodec import container, enhancement

HERE = Path(__file__).parent / "data" / "golden"
GOLDEN = json.loads((HERE / "enhancement_and_container.json").read_text())
BASE = bytes.fromhex(GOLDEN["base_layer"])
GOLDEN3 = json.loads((HERE / "enhancement_format3.json").read_text())
BASE3 = bytes.fromhex(GOLDEN3["base_layer"])


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest()


@pytest.mark.parametrize("case", GOLDEN["enhancement"], ids=lambda c: f"{c['codec']}-format{c['format']}")
def test_golden_enhancement_payloads_decode_to_the_same_pixels(case):
    payload = bytes.fromhex(case["payload"])
    header = enhancement.read_header(payload)
    assert header.version == case["format"] and header.codec == case["codec"]
    assert digest(enhancement.decode(payload, BASE)) == case["decoded_sha256"]


@pytest.mark.parametrize("case", GOLDEN3["enhancement"], ids=lambda c: f"{c['codec']}-format3-{c['mode']}")
def test_golden_format_3_payloads_decode_to_the_same_pixels(case):
    payload = bytes.fromhex(case["payload"])
    header = enhancement.read_header(payload)
    assert (header.version, header.codec, header.mode) == (3, case["codec"], case["mode"])
    assert (header.predictor_tag, header.restoration_tag) == (case["predictor_tag"], case["restoration_tag"])
    assert digest(enhancement.decode(payload, BASE3)) == case["decoded_sha256"]


GOLDEN_RESTORED = json.loads((HERE / "enhancement_restoration.json").read_text())


@pytest.mark.parametrize("case", GOLDEN_RESTORED["cases"],
                         ids=lambda c: f"avif-{c['mode']}-restoration{c['restoration_tag']}")
def test_golden_payloads_naming_each_restoration_network_decode_to_the_same_face(case):
    """A payload decodes with the network its tag names, also after newer ones are registered (to one
    level per sample: the networks run in floating point on two runtimes)."""
    import base64
    import io

    from PIL import Image

    payload = bytes.fromhex(case["payload"])
    assert enhancement.read_header(payload).restoration_tag == case["restoration_tag"]
    expected = np.asarray(Image.open(io.BytesIO(base64.b64decode(case["decoded_png"]))), np.int16)
    decoded = enhancement.decode(payload, bytes.fromhex(GOLDEN_RESTORED["base_layer"])).astype(np.int16)
    assert np.abs(decoded - expected).max() <= 1
    plain = next(c for c in GOLDEN3["enhancement"] if c["codec"] == "avif" and c["mode"] == case["mode"])
    assert np.abs(decoded - enhancement.decode(bytes.fromhex(plain["payload"]), BASE3)).max() > 1  # it ran


def test_every_restoration_network_has_a_golden_payload():
    from facecodec import restoration, zoo

    assert {c["restoration_tag"] for c in GOLDEN_RESTORED["cases"]} == {e.tag for e in zoo.entries(restoration.KIND)}


def test_every_enhancement_format_and_conventional_codec_has_a_golden_payload():
    cases = GOLDEN["enhancement"] + GOLDEN3["enhancement"]
    assert {c["format"] for c in cases} == set(enhancement.VERSIONS)
    assert {c["codec"] for c in cases} == {"jpeg", "jpeg2000", "webp", "avif", "png"}
    assert {(c["codec"], c["mode"]) for c in GOLDEN3["enhancement"]} == {
        (codec, mode) for codec in ("jpeg", "jpeg2000", "webp", "avif", "png")
        for mode in (enhancement.RESIDUAL, enhancement.DIRECT)}


def test_the_golden_format_3_container_decodes_every_layer_to_the_same_pixels():
    data = bytes.fromhex(GOLDEN3["container"]["data"])
    face = container.unpack(data)
    assert face.base == BASE3 and len(face.enhancements) == GOLDEN3["container"]["layers"]
    want = GOLDEN3["container"]["decoded_sha256"]
    assert digest(container.decode_image(data, "full", 0)) == want["full_0"]
    assert digest(container.decode_image(data, "full", 1)) == want["full_1"]


def test_the_golden_container_unpacks_and_decodes_every_layer_to_the_same_pixels():
    data = bytes.fromhex(GOLDEN["container"]["data"])
    face = container.unpack(data)
    assert face.base == BASE and len(face.enhancements) == GOLDEN["container"]["layers"]
    want = GOLDEN["container"]["decoded_sha256"]  # (the base layer's picture is the newest display network's:
    assert digest(container.decode_image(data, "full", 0)) == want["full_0"]  # not a property of the payload)
    assert digest(container.decode_image(data, "full", 1)) == want["full_1"]
