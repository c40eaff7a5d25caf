"""How tests/data/golden/enhancement_restoration.json was made (run once, when restoration tag 2 was
registered; never to make a failing golden test pass). ``python tests/data/golden/make_restoration_golden.py``.

The AVIF format-3 golden payloads of ``enhancement_format3.json`` (residual and direct mode), each with its
restoration tag set to every registered AVIF restoration network (1 and 2) and its CRC-8 recomputed, and
what they decode to, as PNG: the networks run in floating point on OpenVINO or ONNX Runtime, whose last
bits may differ, so the test allows one level per sample where the format-3 goldens ask for the same bits.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

HERE = Path(__file__).parent


def with_restoration_tag(payload: bytes, tag: int) -> bytes:
    from facecodec import enhancement

    size = enhancement.read_header(payload).size
    head = payload[:4] + bytes([tag]) + payload[5 : size - 1]
    return head + bytes([enhancement._crc8(head + payload[size:])]) + payload[size:]


def main() -> None:
    import numpy as np
    from PIL import Image

    from facecodec import enhancement, restoration, zoo

    golden = json.loads((HERE / "enhancement_format3.json").read_text())
    base = bytes.fromhex(golden["base_layer"])
    cases = []
    for source in (c for c in golden["enhancement"] if c["codec"] == "avif"):
        for entry in sorted(zoo.entries(restoration.KIND), key=lambda e: e.tag):
            if entry.head != "avif":
                continue
            payload = with_restoration_tag(bytes.fromhex(source["payload"]), entry.tag)
            buf = io.BytesIO()
            Image.fromarray(np.asarray(enhancement.decode(payload, base), np.uint8)).save(buf, "PNG")
            cases.append({"mode": source["mode"], "restoration_tag": entry.tag, "restoration": entry.name,
                          "payload": payload.hex(), "decoded_png": base64.b64encode(buf.getvalue()).decode()})
    out = {"base_layer": golden["base_layer"], "made_by": "facecodec at the commit that added this file",
           "cases": cases}
    (HERE / "enhancement_restoration.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
