"""``make demo`` (codec part): run the codec on the bundled sample faces and print bytes and accuracy.

Every image of ``tests/data/faces`` goes through detection, alignment, the 128-D feature and
the base layer; then every pair of sample faces is verified on the decoded features at the
decision threshold calibrated on LFW, against the same on float features.
"""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"
THRESHOLD = 0.6  # dlib's Euclidean threshold; the LFW-calibrated value is in eval/results/rate_accuracy.json


def calibrated_threshold() -> float:
    import json

    path = Path(__file__).resolve().parent.parent / "eval" / "results" / "rate_accuracy.json"
    try:
        return float(json.loads(path.read_text())["float_threshold"]["value"])
    except (OSError, KeyError, ValueError):
        return THRESHOLD


def run(out=sys.stdout) -> dict:
    from tqdm import tqdm

    from facecodec import base_layer, enhancement
    from facecodec.frontend import FaceFrontEnd
    from facecodec.images import load_rgb

    paths = sorted(SAMPLES.glob("*/*.jpg"))
    fe = FaceFrontEnd()
    codec = base_layer.get_codec()
    people, floats, decoded, sizes, enh_sizes = [], [], [], [], []
    for p in tqdm(paths, desc="encoding sample faces", file=sys.stderr):
        face = fe.analyze_main(load_rgb(p))
        payload = codec.compress(face.feature)
        people.append(p.parent.name)
        floats.append(face.feature)
        decoded.append(base_layer.decode(payload).feature)
        sizes.append(len(payload))
        enh_sizes.append(len(enhancement.encode(face.chip, payload, "webp", 50)))
    thr = calibrated_threshold()

    def accuracy(feats) -> float:
        ok = [(np.linalg.norm(feats[i] - feats[j]) <= thr) == (people[i] == people[j])
              for i, j in itertools.combinations(range(len(people)), 2)]
        return float(np.mean(ok))

    result = {"faces": len(paths), "people": len(set(people)), "base_bytes_mean": float(np.mean(sizes)),
              "base_bytes_max": int(max(sizes)), "enhancement_webp_q50_bytes_mean": float(np.mean(enh_sizes)),
              "threshold": thr, "pairs": len(people) * (len(people) - 1) // 2,
              "accuracy_float": accuracy(np.stack(floats)), "accuracy_base_layer": accuracy(np.stack(decoded))}
    print(f"{result['faces']} sample faces of {result['people']} people, base layer step {codec.model.steps[codec.step_index]:g}", file=out)
    print(f"  base layer: {result['base_bytes_mean']:.1f} bytes per face on average (max {result['base_bytes_max']}), header included", file=out)
    print(f"  enhancement layer (webp q50): {result['enhancement_webp_q50_bytes_mean']:.0f} bytes per face", file=out)
    print(f"  verification of all {result['pairs']} pairs at threshold {thr:.3f}: "
          f"float features {100 * result['accuracy_float']:.1f}%, decoded base layer {100 * result['accuracy_base_layer']:.1f}%", file=out)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run()
