"""``facecodec``: encode a face image to a base-layer payload, decode it, inspect it.

    facecodec encode IMAGE [-o FACE.fcb] [--step N] [--backend NAME] [--enhance CODEC:qN]
    facecodec decode FACE.fcb [-o FEATURE.npy]
    facecodec info FACE.fcb
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from facecodec.errors import FaceCodecError


def _enhance_spec(text: str) -> tuple[str, int]:
    codec, _, q = text.partition(":")
    try:
        return codec, int(q.lstrip("q")) if q else 75
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CODEC:qN (e.g. webp:q50), got {text!r}") from None


def cmd_encode(args) -> int:
    from facecodec import base_layer
    from facecodec.frontend import FaceFrontEnd
    from facecodec.images import load_rgb

    face = FaceFrontEnd(args.backend).analyze_main(load_rgb(args.image), fallback=not args.strict)
    payload = base_layer.encode(face.feature, face.backend, args.step)
    out = args.output or Path(args.image).with_suffix(".fcb")
    Path(out).write_bytes(payload)
    report = {"output": str(out), "bytes": len(payload), "detection_probability": face.quality.probability,
              "face_size": face.quality.face_size, "fallback": face.quality.fallback}
    if args.enhance:
        from facecodec import enhancement

        codec, quality = args.enhance
        enh = enhancement.encode(face.chip, payload, codec, quality)
        Path(str(out) + ".enh").write_bytes(enh)
        report.update(enhancement_output=str(out) + ".enh", enhancement_bytes=len(enh))
    print(json.dumps(report))
    return 0


def cmd_decode(args) -> int:
    from facecodec import base_layer

    decoded = base_layer.decode(Path(args.payload).read_bytes())
    out = args.output or Path(args.payload).with_suffix(".npy")
    np.save(out, decoded.feature)
    print(json.dumps({"output": str(out), "backend": decoded.backend, "model": decoded.model,
                      "step": decoded.step, "dim": int(decoded.feature.shape[0])}))
    return 0


def cmd_info(args) -> int:
    from facecodec import base_layer

    data = Path(args.payload).read_bytes()
    header = base_layer.read_header(data)
    decoded = base_layer.decode(data)
    print(json.dumps({"kind": "base-layer", "bytes": len(data), "version": header.version, "backend": header.backend,
                      "step_index": header.step_index, "step": decoded.step, "model": decoded.model}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facecodec", description="Scalable face codec: base layer (deep feature) + enhancement layer")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode", help="detect, align, extract and encode the central face of IMAGE")
    e.add_argument("image")
    e.add_argument("-o", "--output", type=Path)
    e.add_argument("--step", type=int, default=None, help="index into the quantization ladder (default: the model's)")
    e.add_argument("--backend", default=None, help="feature backend (default dlib-resnet-128)")
    e.add_argument("--strict", action="store_true", help="fail when no face is detected instead of using the centre box")
    e.add_argument("--enhance", type=_enhance_spec, default=None, help="also write an enhancement layer, e.g. webp:q50")
    e.set_defaults(func=cmd_encode)
    d = sub.add_parser("decode", help="decode a base-layer payload to its feature (.npy)")
    d.add_argument("payload")
    d.add_argument("-o", "--output", type=Path)
    d.set_defaults(func=cmd_decode)
    i = sub.add_parser("info", help="describe a payload")
    i.add_argument("payload")
    i.set_defaults(func=cmd_info)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return args.func(args)
    except (FaceCodecError, OSError) as err:
        print(f"facecodec: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
