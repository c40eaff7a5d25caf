"""``facecodec``: encode a face image to a scalable payload, decode it, inspect it.

    facecodec encode IMAGE [-o FACE.fcb] [--step N] [--backend NAME] [--enhance CODEC:qN ...]
    facecodec decode FACE.fcb|FACE.fcs [--layer feature|base|full] [-o OUT]
    facecodec info FACE.fcb|FACE.fcs

Without ``--enhance`` the output is the base layer alone (``.fcb``); with one or more it is the
scalable container (``.fcs``, :mod:`facecodec.container`) holding the base layer and each
enhancement layer. ``decode --layer feature`` writes the decoded feature (``.npy``), ``base``
the face rebuilt from the base layer alone and ``full`` base plus the (last) enhancement layer
(PNG).
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
    report = {"base_bytes": len(payload), "detection_probability": face.quality.probability,
              "face_size": face.quality.face_size, "fallback": face.quality.fallback}
    if args.enhance:
        from facecodec import container, enhancement

        layers = [enhancement.encode(face.chip, payload, codec, quality) for codec, quality in args.enhance]
        data = container.pack(container.ScalableFace(payload, layers))
        report["enhancement_bytes"] = [len(e) for e in layers]
        out = args.output or Path(args.image).with_suffix(".fcs")
    else:
        data, out = payload, args.output or Path(args.image).with_suffix(".fcb")
    Path(out).write_bytes(data)
    print(json.dumps({"output": str(out), "bytes": len(data), **report}))
    return 0


def _layers(data: bytes):
    """(base payload, enhancement payloads) of a base-layer file or a scalable container."""
    from facecodec import container

    if data[:1] and data[0] & 0xF0 == container.MAGIC:
        face = container.unpack(data)
        return face.base, face.enhancements
    return data, []


def cmd_decode(args) -> int:
    from facecodec import base_layer

    base, enhancements = _layers(Path(args.payload).read_bytes())
    decoded = base_layer.decode(base)
    if args.layer == "feature":
        out = args.output or Path(args.payload).with_suffix(".npy")
        np.save(out, decoded.feature)
        print(json.dumps({"output": str(out), "layer": "feature", "backend": decoded.backend, "model": decoded.model,
                          "step": decoded.step, "dim": int(decoded.feature.shape[0])}))
        return 0
    from PIL import Image

    from facecodec import enhancement, reconstruction

    if args.layer == "full":
        if not enhancements:
            raise FaceCodecError(f"{args.payload} holds no enhancement layer; decode --layer base")
        image = enhancement.decode(enhancements[-1], base)
    else:
        image = reconstruction.reconstruct(base)
    out = args.output or Path(args.payload).with_suffix(f".{args.layer}.png")
    Image.fromarray(image).save(out)
    print(json.dumps({"output": str(out), "layer": args.layer, "size": list(image.shape[:2])}))
    return 0


def cmd_info(args) -> int:
    from facecodec import base_layer, enhancement

    data = Path(args.payload).read_bytes()
    base, enhancements = _layers(data)
    header = base_layer.read_header(base)
    decoded = base_layer.decode(base)
    info = {"kind": "container" if enhancements else "base-layer", "bytes": len(data), "base_bytes": len(base),
            "version": header.version, "backend": header.backend, "step_index": header.step_index,
            "step": decoded.step, "model": decoded.model}
    if enhancements:
        info["enhancements"] = []
        for e in enhancements:
            h = enhancement.read_header(e)
            info["enhancements"].append({"bytes": len(e), "codec": h.codec, "quality": h.quality,
                                         "predictor_tag": h.predictor_tag})
    print(json.dumps(info))
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
    e.add_argument("--enhance", type=_enhance_spec, action="append", default=None,
                   help="add an enhancement layer, e.g. webp:q50, jpeg2000:q30, learned:q2 (repeatable)")
    e.set_defaults(func=cmd_encode)
    d = sub.add_parser("decode", help="decode a payload to its feature (.npy) or face (.png)")
    d.add_argument("payload")
    d.add_argument("--layer", choices=("feature", "base", "full"), default="feature")
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
