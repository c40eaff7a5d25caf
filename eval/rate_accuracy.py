"""``rate-accuracy``: 10-fold LFW verification accuracy against bytes per face (paper Fig. 2).

Accuracy uses all 6,000 pairs of ``pairs.txt`` (and, separately, folds 9-10, the test people);
bytes per face are the real payload lengths, header included, averaged over the test people.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.lfw import lfw_root, people, read_pairs
from eval.prepare import FeatureCache
from eval.provenance import write_results
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


def base_layer_curve(cache: FeatureCache, pairs, test_rows: np.ndarray) -> tuple[list[dict], str, list[np.ndarray]]:
    """One point per step of the ladder, and each step's pair distances on decoded features."""
    from facecodec import base_layer

    model = base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))
    needed = np.unique(np.concatenate([cache.rows(pairs.left), cache.rows(pairs.right), test_rows]))
    test_set = set(test_rows.tolist())
    curve, distances = [], []
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
        distances.append(v["distances"])
        curve.append({"param": float(model.steps[s]), "step": float(model.steps[s]), "step_index": s, "bytes": float(np.mean(sizes)),
                      "accuracy": v["accuracy"], "accuracy_folds_9_10": v["accuracy_folds_9_10"]})
    return curve, model.name, distances


def choose_default(curve: list[dict], float_accuracy: float, tolerance: float, max_bytes: float) -> dict:
    """The coarsest step that, with every finer step, stays within ``tolerance`` of float accuracy.

    Requiring the finer steps too keeps one lucky point (10-fold accuracy moves by about 0.2
    points between neighbouring steps) from setting the default; ``max_bytes`` caps the size.
    """
    best = None
    for p in sorted(curve, key=lambda p: p["step"]):
        if p["accuracy"] < float_accuracy - tolerance:
            break
        if p["bytes"] <= max_bytes:
            best = p
    return best or max(curve, key=lambda p: p["accuracy"])


def run(cache: FeatureCache, out: Path | None = RESULTS / "rate_accuracy.json", tolerance: float = 0.003,
        max_bytes: float = 40.0, anchors: bool = True, per_fold: int = 30, workers: int = 2,
        quick: bool = False) -> dict:
    """Every curve of the rate-accuracy figure; ``quick`` trims the anchors to a few pairs and qualities."""
    root = lfw_root()
    pairs = read_pairs(root)
    who = people(root, "test")
    test_rows = cache.split_rows("test")
    flt = verify(cache.features, cache, pairs)
    # The operating threshold for the server: fitted on all folds of float features.
    from facecodec.verification import best_threshold

    thr = best_threshold(flt["distances"], pairs.same)
    far, frr = rates_at(flt["distances"], pairs.same, thr)
    curve, model, step_distances = base_layer_curve(cache, pairs, test_rows)
    default = choose_default(curve, flt["accuracy"], tolerance, max_bytes)
    # The server matches decoded base-layer features: its threshold is fitted on those, at the default step.
    d_default = step_distances[default["step_index"]]
    thr_default = best_threshold(d_default, pairs.same)
    far_default, frr_default = rates_at(d_default, pairs.same, thr_default)
    pair_rows = np.unique(np.concatenate([cache.rows(pairs.left), cache.rows(pairs.right)]))
    curves = {"base_layer": curve}
    anchor_meta = None
    if anchors:
        from eval.compress_analyze import curves as anchor_curves
        from facecodec.image_codecs import CODECS

        ladder = {c: CODECS[c].qualities for c in ("jpeg", "jpeg2000", "webp", "avif")}
        if quick:
            ladder = {c: q[::3] for c, q in ladder.items() if c in ("jpeg", "webp")}
        from eval.compress_analyze import subset

        n_per_fold = 4 if quick else per_fold
        found, anchor_meta = anchor_curves(cache, pairs, ladder, n_per_fold, who, workers)
        sel = subset(pairs, n_per_fold)
        anchor_meta["base_layer_default_accuracy_on_subset"] = ten_fold_accuracy(
            d_default[sel], pairs.same[sel], pairs.fold[sel]).accuracy
        for point, d in zip(curve, step_distances):  # the base layer on the anchors' pairs too
            point["accuracy_on_anchor_pairs"] = ten_fold_accuracy(d[sel], pairs.same[sel], pairs.fold[sel]).accuracy
        curves.update(found)
        curves.update(scalable_curves(curve[default["step_index"]], test_rows, cache))
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
        "curves": curves,
        "compress_then_analyze": anchor_meta,
        "default_point": {"codec": "base_layer", "step": default["step"], "step_index": default["step_index"],
                          "bytes": default["bytes"], "accuracy": default["accuracy"],
                          "threshold": {"value": thr_default, "far": far_default, "frr": frr_default,
                                        "fitted_on": "all 6000 pairs, decoded base-layer features at this step"}},
    }
    return write_results(result, out)


def scalable_curves(base_point: dict, test_rows: np.ndarray, cache: FeatureCache, sample: int = 200) -> dict:
    """Base + enhancement: the analysis still reads the base layer's feature, so accuracy is the
    base layer's; the bytes grow by the enhancement layer (measured on a sample of test faces)."""
    from facecodec import base_layer, enhancement
    from facecodec.image_codecs import CODECS

    rows = test_rows[np.linspace(0, len(test_rows) - 1, min(sample, len(test_rows))).astype(int)]
    bases = {int(i): base_layer.encode(cache.features[i]) for i in rows}
    out = {}
    for name in ("jpeg", "jpeg2000", "webp", "avif"):
        pts = []
        for q in tqdm(CODECS[name].qualities[::2], desc=f"base+{name}", leave=False):
            sizes = [len(bases[int(i)]) + len(enhancement.encode(np.asarray(cache.chips[i]), bases[int(i)], name, q)) for i in rows]
            pts.append({"param": q, "bytes": float(np.mean(sizes)), "accuracy": base_point["accuracy"]})
        out[f"base+{name}"] = pts
    return out
