"""Golden enhancement payloads and a golden scalable container: every format stays decodable
(``tests/data/golden/enhancement_and_container.json``, made once by ``make_enhancement_golden.py``).

For each conventional codec, a payload of format 2 (container header deflated against the registered
dictionary) and of format 1 (the first header, no dictionary), each predicted from a frozen base layer;
and one container with two enhancement layers. Decoding must give the same pixels, bit for bit (their
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

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden" / "enhancement_and_container.json").read_text())
BASE = bytes.fromhex(GOLDEN["base_layer"])


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest()


@pytest.mark.parametrize("case", GOLDEN["enhancement"], ids=lambda c: f"{c['codec']}-format{c['format']}")
def test_golden_enhancement_payloads_decode_to_the_same_pixels(case):
    payload = bytes.fromhex(case["payload"])
    header = enhancement.read_header(payload)
    assert header.version == case["format"] and header.codec == case["codec"]
    assert digest(enhancement.decode(payload, BASE)) == case["decoded_sha256"]


def test_every_enhancement_format_and_conventional_codec_has_a_golden_payload():
    assert {c["format"] for c in GOLDEN["enhancement"]} == set(enhancement.HEADERS)
    assert {c["codec"] for c in GOLDEN["enhancement"]} == {"jpeg", "jpeg2000", "webp", "avif", "png"}


def test_the_golden_container_unpacks_and_decodes_every_layer_to_the_same_pixels():
    data = bytes.fromhex(GOLDEN["container"]["data"])
    face = container.unpack(data)
    assert face.base == BASE and len(face.enhancements) == GOLDEN["container"]["layers"]
    want = GOLDEN["container"]["decoded_sha256"]  # (the base layer's picture is the newest display network's:
    assert digest(container.decode_image(data, "full", 0)) == want["full_0"]  # not a property of the payload)
    assert digest(container.decode_image(data, "full", 1)) == want["full_1"]
