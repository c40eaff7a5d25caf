"""``python -m bench.codecs``: enhancement-layer encode and decode time per face on one core.

For every residual codec (JPEG, JPEG 2000, WebP, AVIF, and the learned ones when the model zoo
holds them) at its middle quality: the time to build the enhancement payload from a face chip
and its base layer (prediction included) and to decode it back to the 112x112 face, on the
committed LFW sample (tests/data/faces). The base layer's own encode/decode and the
reconstruction alone are timed too. Figures are medians over faces (the machine may be
shared), means beside them; one thread (``torch.set_num_threads(1)``). Results go to
``bench/results/codecs.json`` with the commit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _time(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def _summary(ms: list[float]) -> dict:
    return {"median_ms": round(statistics.median(ms), 3), "mean_ms": round(statistics.fmean(ms), 3)}


def run(faces: int, repeat: int, out: Path | None) -> dict:
    import torch

    from eval.provenance import write_results
    from facecodec import base_layer, enhancement, reconstruction
    from facecodec.image_codecs import CODECS

    from facecodec.frontend import FaceFrontEnd
    from facecodec.images import load_rgb

    torch.set_num_threads(1)
    front = FaceFrontEnd()
    paths = sorted((ROOT / "tests" / "data" / "faces").glob("*/*.jpg"))[:faces]
    sample = [front.analyze_main(load_rgb(p)) for p in tqdm(paths, desc="align")]
    rows: dict[str, dict] = {}
    bases = [base_layer.encode(f.feature) for f in sample]
    rows["base_layer"] = {
        "encode": _summary([t for f in sample for t in _time(lambda: base_layer.encode(f.feature), repeat)]),
        "decode": _summary([t for b in bases for t in _time(lambda: base_layer.decode(b), repeat)]),
        "bytes": statistics.fmean(len(b) for b in bases)}
    rows["reconstruction"] = {"decode": _summary([t for b in bases for t in _time(lambda: reconstruction.reconstruct(b), repeat)])}
    for name, codec in tqdm(CODECS.items(), desc="codecs"):
        qs = codec.qualities
        if name == "png" or not qs:
            continue
        q = qs[len(qs) // 2]
        enc, dec, sizes = [], [], []
        for f, b in zip(sample, bases):
            enc += _time(lambda: enhancement.encode(f.chip, b, name, q), repeat)
            payload = enhancement.encode(f.chip, b, name, q)
            dec += _time(lambda: enhancement.decode(payload, b), repeat)
            sizes.append(len(payload))
        rows[name] = {"quality": q, "encode": _summary(enc), "decode": _summary(dec), "bytes": statistics.fmean(sizes)}
    result = {"what": "enhancement-layer encode/decode time per 112x112 face on one core (prediction included), "
                      "base layer and reconstruction apart",
              "faces": len(sample), "repeat": repeat, "codecs": rows}
    return write_results(result, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.codecs")
    p.add_argument("--faces", type=int, default=24)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "codecs.json")
    args = p.parse_args(argv)
    result = run(args.faces, args.repeat, args.out)
    for name, r in result["codecs"].items():
        print(f"{name:14s} " + "  ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in r.items() if isinstance(v, dict)))


if __name__ == "__main__":
    main()
