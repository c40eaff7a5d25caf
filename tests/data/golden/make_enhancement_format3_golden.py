"""How tests/data/golden/enhancement_format3.json was made (run once, when format 3 was introduced;
never to make a failing golden test pass). ``python tests/data/golden/make_enhancement_format3_golden.py``.

The same committed sample face as ``enhancement_and_container.json``; its base layer is the format-2
golden payload of that face (``base_layer_format2.json``: the prediction head of format 3 was fitted on
format-2 features). For every conventional image codec, a format-3 payload in each mode (``residual``:
the residual around the prediction, scaled by its largest magnitude; ``direct``: the crop itself), with
the header dictionary; no restoration network was registered, so the restoration tag is 0. And one
scalable container (0xC1) with that base layer and two format-3 layers. Expected decodes are the
SHA-256 of the decoded 112x112x3 uint8 pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

from make_enhancement_golden import QUALITY, SAMPLE, SOURCE, digest

HERE = Path(__file__).parent


def main() -> None:
    from facecodec import container, enhancement
    from facecodec.frontend import FaceFrontEnd
    from facecodec.images import load_rgb

    base_case = next(c for c in json.loads((HERE / "base_layer_format2.json").read_text())["cases"]
                     if c["source"] == SOURCE)
    base = bytes.fromhex(base_case["payload"])
    chip = FaceFrontEnd().analyze_main(load_rgb(SAMPLE / SOURCE)).chip
    cases = []
    for codec, quality in QUALITY.items():
        for mode in (enhancement.RESIDUAL, enhancement.DIRECT):
            p = enhancement.encode(chip, base, codec, quality, compact=True, mode=mode)
            h = enhancement.read_header(p)
            assert h.version == 3 and h.mode == mode
            cases.append({"codec": codec, "format": 3, "mode": mode, "predictor_tag": h.predictor_tag,
                          "restoration_tag": h.restoration_tag, "payload": p.hex(),
                          "decoded_sha256": digest(enhancement.decode(p, base))})
    layers = [bytes.fromhex(c["payload"]) for c in cases
              if (c["codec"], c["mode"]) in (("jpeg", enhancement.RESIDUAL), ("avif", enhancement.DIRECT))]
    packed = container.pack(container.ScalableFace(base, layers))
    out = {"source": SOURCE, "base_layer": base.hex(), "made_by": "facecodec at the commit that added this file",
           "enhancement": cases,
           "container": {"format": 1, "data": packed.hex(), "layers": 2,
                         "decoded_sha256": {"full_0": digest(container.decode_image(packed, "full", 0)),
                                            "full_1": digest(container.decode_image(packed, "full", 1))}}}
    (HERE / "enhancement_format3.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
