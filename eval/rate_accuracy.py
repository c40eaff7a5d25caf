"""``rate-accuracy``: 10-fold LFW verification accuracy against bytes per face (paper Fig. 2).

Accuracy uses all 6,000 pairs of ``pairs.txt`` (and, separately, folds 9-10, the test people);
bytes per face are the real payload lengths, header included, averaged over the test people.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.lfw import lfw_root, people, read_pairs
from eval.prepare import FeatureCache
from eval.provenance import commit, machine
from facecodec.verification import pair_distances, rates_at, ten_fold_accuracy

RESULTS = Path(__file__).parent / "results"


def verify(feats: np.ndarray, cache: FeatureCache, pairs) -> dict:
    """Accuracy of ``feats`` (rows of the cache) on all folds and on folds 9-10."""
    li, ri = cache.rows(pairs.left), cache.rows(pairs.right)
    d = pair_distances(feats[li], feats[ri])
    res = ten_fold_accuracy(d, pairs.same, pairs.fold)
    test = pairs.fold >= 8
    res_test = ten_fold_accuracy(d[test], pairs.same[test], pairs.fold[test])
    return {"accuracy": res.accuracy, "std": res.std, "accuracy_folds_9_10": res_test.accuracy,
            "thresholds": res.thresholds, "distances": d}


def base_layer_curve(cache: FeatureCache, pairs, test_rows: np.ndarray) -> tuple[list[dict], str]:
    from facecodec import base_layer

    model = base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))
    needed = np.unique(np.concatenate([cache.rows(pairs.left), cache.rows(pairs.right), test_rows]))
    test_set = set(test_rows.tolist())
    curve = []
    for s in tqdm(range(len(model.steps)), desc="base layer steps"):
        codec = base_layer.BaseLayerCodec(model, s)
        dec = cache.features.copy()
        sizes = []
        for i in needed:
            payload = codec.compress(cache.features[i])
            dec[i] = codec.decompress(payload).feature
            if i in test_set:
                sizes.append(len(payload))
        v = verify(dec, cache, pairs)
        curve.append({"step": float(model.steps[s]), "step_index": s, "bytes": float(np.mean(sizes)),
                      "accuracy": v["accuracy"], "accuracy_folds_9_10": v["accuracy_folds_9_10"]})
    return curve, model.name


def run(cache: FeatureCache, out: Path = RESULTS / "rate_accuracy.json", tolerance: float = 0.003,
        max_bytes: float = 40.0) -> dict:
    root = lfw_root()
    pairs = read_pairs(root)
    who = people(root, "test")
    test_rows = np.array([i for i, n in enumerate(cache.names) if n.split("/")[0] in who])
    flt = verify(cache.features, cache, pairs)
    # The operating threshold for the server: fitted on all folds of float features.
    from facecodec.verification import best_threshold

    thr = best_threshold(flt["distances"], pairs.same)
    far, frr = rates_at(flt["distances"], pairs.same, thr)
    curve, model = base_layer_curve(cache, pairs, test_rows)
    ok = [p for p in curve if p["accuracy"] >= flt["accuracy"] - tolerance and p["bytes"] <= max_bytes]
    default = min(ok, key=lambda p: p["bytes"]) if ok else max(curve, key=lambda p: p["accuracy"])
    pair_rows = np.unique(np.concatenate([cache.rows(pairs.left), cache.rows(pairs.right)]))
    result = {
        "dataset": "LFW deep-funneled, View 2 pairs.txt (10 folds, 6000 pairs); bytes on test people",
        "feature_backend": "dlib-resnet-128",
        "float_accuracy": flt["accuracy"],
        "float_accuracy_std": flt["std"],
        "float_accuracy_folds_9_10": flt["accuracy_folds_9_10"],
        "float_threshold": {"value": thr, "far": far, "frr": frr, "fitted_on": "all 6000 pairs, float features"},
        "detection_fallbacks": {"all_images": int(cache.quality[:, 2].sum()), "pair_images": int(cache.quality[pair_rows, 2].sum()),
                                "images": len(cache.names), "fallback": "centre box 0.44 of the image side"},
        "test_images": int(len(test_rows)),
        "base_layer_model": model,
        "curves": {"base_layer": curve},
        "default_point": {"codec": "base_layer", "step": default["step"], "step_index": default["step_index"],
                          "bytes": default["bytes"], "accuracy": default["accuracy"]},
        "commit": commit(),
        "machine": machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result
