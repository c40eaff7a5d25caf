"""How tests/data/golden/enhancement_and_container.json was made (run once, when a format is introduced;
never to make a failing golden test pass). ``python tests/data/golden/make_enhancement_golden.py``.

One committed sample face; its base layer is the format-1 golden payload of the same face
(base_layer_format1.json), so the prediction the enhancement layer subtracts comes from a frozen payload.
For every conventional image codec, an enhancement payload of format 2 (header dictionary on) and of
format 1 (the same image stream without the dictionary, the 10-byte header of the first format); one
scalable container (0xC1) with the base layer and two enhancement layers. Expected decodes are the
SHA-256 of the decoded 112x112x3 uint8 pixels.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SAMPLE = HERE.parent / "faces"
SOURCE = "Alvaro_Uribe/Alvaro_Uribe_0001.jpg"
QUALITY = {"jpeg": 40, "jpeg2000": 30, "webp": 30, "avif": 30, "png": 0}


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest()


def as_format_1(payload2: bytes) -> bytes:
    """A format-2 payload without dictionary (tag 0) rewritten with format 1's header."""
    from facecodec import enhancement

    h = enhancement.read_header(payload2)
    assert h.dictionary_tag == 0
    body = payload2[h.size:]
    head = enhancement.HEADERS[1].pack(enhancement.MAGIC | 1, payload2[1], h.predictor_tag, h.quality, h.lo, h.hi, 0)[:-2]
    return head + binascii.crc_hqx(head + body, 0xFFFF).to_bytes(2, "big") + body


def main() -> None:
    from facecodec import container, enhancement
    from facecodec.frontend import FaceFrontEnd
    from facecodec.images import load_rgb

    base_case = next(c for c in json.loads((HERE / "base_layer_format1.json").read_text())["cases"]
                     if c["source"] == SOURCE)
    base = bytes.fromhex(base_case["payload"])
    chip = FaceFrontEnd().analyze_main(load_rgb(SAMPLE / SOURCE)).chip
    cases = []
    for codec, quality in QUALITY.items():
        p2 = enhancement.encode(chip, base, codec, quality, compact=True)
        cases.append({"codec": codec, "format": 2, "payload": p2.hex(), "decoded_sha256": digest(enhancement.decode(p2, base))})
        plain = enhancement.encode(chip, base, codec, quality, compact=False)
        p1 = as_format_1(plain)
        cases.append({"codec": codec, "format": 1, "payload": p1.hex(), "decoded_sha256": digest(enhancement.decode(p1, base))})
    layers = [bytes.fromhex(c["payload"]) for c in cases if c["format"] == 2 and c["codec"] in ("jpeg", "avif")]
    packed = container.pack(container.ScalableFace(base, layers))
    out = {"source": SOURCE, "base_layer": base.hex(), "made_by": "facecodec at the commit that added this file",
           "enhancement": cases,
           "container": {"format": 1, "data": packed.hex(), "layers": 2,
                         "decoded_sha256": {"base": digest(container.decode_image(packed, "base")),
                                            "full_0": digest(container.decode_image(packed, "full", 0)),
                                            "full_1": digest(container.decode_image(packed, "full", 1))}}}
    (HERE / "enhancement_and_container.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
