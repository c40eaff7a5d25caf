"""``facecodec``: analyse images, encode faces to scalable payloads, write enhancement layers, inspect, decode.

    facecodec analyze INPUT... [--chips DIR] [-o OUT.jsonl]      # every face: box, landmarks, quality, base layer
    facecodec encode INPUT... [-o FILE|DIR] [--step N] [--enhance CODEC:qN ...]
    facecodec enhance IMAGE [--face N] | --crop CROP.png --base BASE.fcb  [--codec jpeg --quality 75] -o OUT.fce
    facecodec decode FACE.fcb|FACE.fcs|FACE.fce [--layer feature|base|full] [--base BASE.fcb] [-o OUT]
    facecodec info FACE.fcb|FACE.fcs|FACE.fce

An INPUT is an image, a folder (its images, sorted) or a glob (``'photos/*.jpg'``, expanded here when
the shell did not); several images are one batch: the networks load once, a progress bar goes to
stderr, and each image gives one JSON line on stdout. ``analyze`` is what a camera integrator needs to
speak the wire contract (proto/README.md): per face the detector's box and landmarks, its quality, the
base-layer payload (base64) with the header fields a facewire.v2 Hello carries and the body a batch
carries, and with ``--chips`` the 112x112 crop the enhancement layer codes. ``enhance`` writes a
standalone enhancement payload (what an edge uploads when the server asks), from an image or from a
crop and its base layer. ``encode`` writes the base layer alone (``.fcb``) or, with ``--enhance``, the
scalable container (``.fcs``, :mod:`facecodec.container`).

Start-up is kept small: nothing heavy is imported before a command needs it (``--help`` and ``info``
load neither the networks nor OpenCV), and the networks load once per process. ``python -m bench.cli``
measures it (``bench/results/cli.json``).
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import logging
import sys
from pathlib import Path

from facecodec.errors import FaceCodecError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


def _enhance_spec(text: str) -> tuple[str, int]:
    codec, _, q = text.partition(":")
    try:
        return codec, int(q.lstrip("q")) if q else 75
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CODEC:qN (e.g. webp:q50), got {text!r}") from None


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Images named by ``inputs``: files as given, folders' images (sorted), globs expanded; in order, once
    each. :class:`FaceCodecError` when an input names nothing."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.exists():
            found = [p]
        else:
            found = sorted(Path(f) for f in glob.glob(item, recursive=True)
                           if Path(f).suffix.lower() in IMAGE_SUFFIXES and Path(f).is_file())
        if not found:
            raise FaceCodecError(f"{item}: no such image, or no image in that folder or pattern")
        out += found
    return list(dict.fromkeys(out))


def _progress(items: list, what: str, quiet: bool):
    """``items`` with a progress bar on stderr when there are several (and not ``quiet``)."""
    if quiet or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, unit="image", file=sys.stderr, dynamic_ncols=True)


def _emit(out, record: dict) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _wire_fields(payload: bytes) -> dict:
    """What the wire contract needs of a base-layer payload: the header fields a facewire.v2 Hello
    carries once per stream, and the body a batch carries per face."""
    from facecodec import base_layer

    h = base_layer.read_header(payload)
    # The body is the payload less what Hello fixes and the checksum the server recomputes.
    wire_body = getattr(base_layer, "wire_body", None)
    body = wire_body(payload) if wire_body is not None else payload[5:]
    return {"base_layer": base64.b64encode(payload).decode(), "base_bytes": len(payload),
            "base_header": {"format": h.version, "backend": h.backend, "model_tag": h.model_tag,
                            "step": h.step_index},
            "wire_body": base64.b64encode(body).decode()}


def _frontend(backend: str | None):
    from facecodec.frontend import FaceFrontEnd

    return FaceFrontEnd(backend)


def cmd_analyze(args) -> int:
    from facecodec import base_layer
    from facecodec.crop import face_crop
    from facecodec.images import load_rgb

    images = expand_inputs(args.inputs)
    fe = _frontend(args.backend)
    chips = Path(args.chips) if args.chips else None
    if chips is not None:
        chips.mkdir(parents=True, exist_ok=True)
    out = open(args.output, "w") if args.output else sys.stdout
    failed = 0
    try:
        for n, path in enumerate(_progress(images, "analyze", args.quiet)):
            try:
                rgb = load_rgb(path)
                faces = fe.analyze(rgb)
            except FaceCodecError as e:
                failed += 1
                _emit(out, {"image": str(path), "error": str(e)})
                continue
            record = {"image": str(path), "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "faces": []}
            for i, face in enumerate(faces):
                d = face.detection
                payload = base_layer.encode(face.feature, face.backend, args.step)
                entry = {"index": i, "box": [round(float(v), 2) for v in d.box],
                         "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in d.landmarks],
                         "quality": {"probability": float(d.quality.probability), "face_size": float(d.quality.face_size),
                                     "fallback": bool(d.quality.fallback)},
                         **_wire_fields(payload)}
                if chips is not None:
                    from PIL import Image

                    crop = chips / f"{n:05d}-{path.stem}-{i}.png"
                    Image.fromarray(face_crop(face.chip)).save(crop)
                    entry["crop"] = str(crop)
                record["faces"].append(entry)
            _emit(out, record)
    finally:
        if out is not sys.stdout:
            out.close()
    return 1 if failed else 0


def cmd_encode(args) -> int:
    from facecodec import base_layer
    from facecodec.images import load_rgb

    images = expand_inputs(args.inputs)
    suffix = ".fcs" if args.enhance else ".fcb"
    if len(images) > 1 and args.output is not None and not args.output.is_dir():
        raise FaceCodecError("with several images, -o names an existing folder (each payload is written there)")
    fe = _frontend(args.backend)
    failed = 0
    for path in _progress(images, "encode", args.quiet):
        try:
            face = fe.analyze_main(load_rgb(path), fallback=not args.strict)
        except FaceCodecError as e:
            failed += 1
            print(json.dumps({"image": str(path), "error": str(e)}), flush=True)
            continue
        payload = base_layer.encode(face.feature, face.backend, args.step)
        report = {"base_bytes": len(payload), "detection_probability": face.quality.probability,
                  "face_size": face.quality.face_size, "fallback": face.quality.fallback}
        if args.enhance:
            from facecodec import container, enhancement

            layers = [enhancement.encode(face.chip, payload, codec, quality) for codec, quality in args.enhance]
            data = container.pack(container.ScalableFace(payload, layers))
            report["enhancement_bytes"] = [len(e) for e in layers]
        else:
            data = payload
        if args.output is None:
            out = path.with_suffix(suffix)
        elif args.output.is_dir():
            out = args.output / (path.stem + suffix)
        else:
            out = args.output
        Path(out).write_bytes(data)
        print(json.dumps({"image": str(path), "output": str(out), "bytes": len(data), **report}), flush=True)
    return 1 if failed else 0


def _read_crop(path: Path):
    from facecodec.crop import face_crop
    from facecodec.images import load_rgb

    return face_crop(load_rgb(path))


def cmd_enhance(args) -> int:
    from facecodec import enhancement

    if args.crop is not None:
        if args.image is not None or args.base is None:
            raise FaceCodecError("give an IMAGE, or --crop with --base (the face's base layer), not both")
        chip = _read_crop(args.crop)
        base = args.base.read_bytes()
    else:
        if args.image is None:
            raise FaceCodecError("give an IMAGE, or --crop CROP.png with --base BASE.fcb")
        from facecodec import base_layer
        from facecodec.images import load_rgb

        faces = _frontend(args.backend).analyze(load_rgb(args.image))
        if not 0 <= args.face < len(faces):
            raise FaceCodecError(f"{args.image}: no face {args.face} (found {len(faces)})")
        face = faces[args.face]
        chip, base = face.chip, base_layer.encode(face.feature, face.backend, args.step)
        if args.base is not None:
            args.base.write_bytes(base)
    payload = enhancement.encode(chip, base, args.codec, args.quality)
    out = args.output or Path(args.image or args.crop).with_suffix(".fce")
    Path(out).write_bytes(payload)
    h = enhancement.read_header(payload)
    print(json.dumps({"output": str(out), "bytes": len(payload), "codec": h.codec, "quality": h.quality,
                      "predictor_tag": h.predictor_tag, "base_bytes": len(base)}))
    return 0


def _layers(data: bytes):
    """(base payload, enhancement payloads) of a base-layer file or a scalable container."""
    from facecodec import container

    if data[:1] and data[0] & 0xF0 == container.MAGIC:
        face = container.unpack(data)
        return face.base, face.enhancements
    return data, []


def _is_enhancement(data: bytes) -> bool:
    from facecodec import enhancement

    return bool(data[:1]) and data[0] & 0xF0 == enhancement.MAGIC


def cmd_decode(args) -> int:
    import numpy as np

    from facecodec import base_layer

    data = Path(args.payload).read_bytes()
    if _is_enhancement(data):  # a standalone enhancement payload decodes with its base layer
        if args.base is None:
            raise FaceCodecError(f"{args.payload} is an enhancement layer: give its base layer with --base")
        base, enhancements, args.layer = args.base.read_bytes(), [data], "full"
    else:
        base, enhancements = _layers(data)
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
    if _is_enhancement(data):
        h = enhancement.read_header(data)
        print(json.dumps({"kind": "enhancement", "bytes": len(data), "version": h.version, "codec": h.codec,
                          "quality": h.quality, "predictor_tag": h.predictor_tag}))
        return 0
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facecodec", description="Scalable face codec: base layer (deep feature) + "
                                                               "enhancement layer")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("analyze", help="every face of each image: box, landmarks, quality, base layer (JSON lines)")
    a.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders or glob patterns")
    a.add_argument("--chips", metavar="DIR", help="also write each face's 112x112 crop (PNG) here")
    a.add_argument("-o", "--output", type=Path, help="write the JSON lines here instead of stdout")
    a.add_argument("--step", type=int, default=None, help="index into the quantization ladder (default: the model's)")
    a.add_argument("--backend", default=None, help="feature backend (default dlib-resnet-128)")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_analyze)
    e = sub.add_parser("encode", help="the central face of each image as a base layer (or a scalable container)")
    e.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders or glob patterns")
    e.add_argument("-o", "--output", type=Path, help="output file (one image) or existing folder (several)")
    e.add_argument("--step", type=int, default=None, help="index into the quantization ladder (default: the model's)")
    e.add_argument("--backend", default=None, help="feature backend (default dlib-resnet-128)")
    e.add_argument("--strict", action="store_true", help="fail when no face is detected instead of using the centre box")
    e.add_argument("--enhance", type=_enhance_spec, action="append", default=None,
                   help="add an enhancement layer, e.g. webp:q50, jpeg2000:q30 (repeatable)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_encode)
    h = sub.add_parser("enhance", help="a standalone enhancement payload (what an edge uploads on request)")
    h.add_argument("image", nargs="?", type=Path, help="an image: its face --face is analysed")
    h.add_argument("--face", type=int, default=0, help="which face of the image (analyze's index; default 0)")
    h.add_argument("--crop", type=Path, help="instead of an image: the face's 112x112 crop (analyze --chips) or 150x150 chip")
    h.add_argument("--base", type=Path, help="with --crop: the face's base-layer payload; with an image: also write it here")
    h.add_argument("--codec", default="jpeg", help="jpeg, jpeg2000, webp, avif or png (default jpeg)")
    h.add_argument("--quality", type=int, default=75, help="codec quality (default 75)")
    h.add_argument("--step", type=int, default=None, help="base-layer step, with an image")
    h.add_argument("--backend", default=None, help="feature backend, with an image")
    h.add_argument("-o", "--output", type=Path, help="output file (default: beside the input, .fce)")
    h.set_defaults(func=cmd_enhance)
    d = sub.add_parser("decode", help="decode a payload to its feature (.npy) or face (.png)")
    d.add_argument("payload")
    d.add_argument("--layer", choices=("feature", "base", "full"), default="feature")
    d.add_argument("--base", type=Path, help="the base layer of a standalone enhancement payload")
    d.add_argument("-o", "--output", type=Path)
    d.set_defaults(func=cmd_decode)
    i = sub.add_parser("info", help="describe a payload")
    i.add_argument("payload")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return args.func(args)
    except (FaceCodecError, OSError, ValueError) as err:
        print(f"facecodec: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
