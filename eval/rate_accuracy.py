"""``rate-accuracy``: 10-fold LFW verification accuracy against bytes per face (paper Fig. 2).

Accuracy uses all 6,000 pairs of ``pairs.txt`` (and, separately, folds 9-10, the test people), the
threshold of each fold fitted on the other nine. Bytes per face are real payload lengths, header and
checksum included, averaged per person over the test people (``bytes``: each person's mean, then the
mean over people, so that one person with many images, George W. Bush's 530 of 2,671, weighs as one),
beside the plain mean over images (``bytes_per_image``) and, for the base layer, what the compact wire
carries per face (``stream_bytes``: the body, the stream's Hello holding header and checksum).

Curves: the default base-layer model at every step of its ladder (``base_layer``), the previous
format-1 model (``base_layer_format1``), plain quantizers of the same features trained on the train
people (``pq``, ``opq``, ``itq``: product quantization, optimised PQ and iterative quantization at 8,
16, 24 and 32 bytes, FAISS), compress-then-analyze anchors and base + enhancement.
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
QUANTIZER_BYTES = (8, 16, 24, 32)


def person_of(name: str) -> str:
    return name.split("/")[0]


def per_person_mean(values, names: list[str]) -> float:
    """Mean over people of each person's mean (the issue's accounting: one person, one vote)."""
    sums: dict[str, list[float]] = {}
    for v, n in zip(values, names):
        sums.setdefault(person_of(n), []).append(float(v))
    return float(np.mean([np.mean(v) for v in sums.values()]))


def verify(feats: np.ndarray, cache: FeatureCache, pairs) -> dict:
    """Accuracy of ``feats`` (rows of the cache) on all folds and on folds 9-10."""
    li, ri = cache.rows(pairs.left), cache.rows(pairs.right)
    d = pair_distances(feats[li], feats[ri])
    res = ten_fold_accuracy(d, pairs.same, pairs.fold)
    test = pairs.fold >= 8
    res_test = ten_fold_accuracy(d[test], pairs.same[test], pairs.fold[test])
    return {"accuracy": res.accuracy, "std": res.std, "accuracy_folds_9_10": res_test.accuracy,
            "thresholds": res.thresholds, "distances": d}


def base_layer_curve(cache: FeatureCache, pairs, test_rows: np.ndarray, name: str | None = None
                     ) -> tuple[list[dict], str, list[np.ndarray]]:
    """One point per step of the ladder of model ``name`` (default: the default model), and each step's
    pair distances on features decoded as the server decodes them (:func:`base_layer.decode_many`)."""
    from facecodec import base_layer

    model = base_layer.load_model(name or base_layer.default_model_name("dlib-resnet-128"))
    needed = np.unique(np.concatenate([cache.rows(pairs.left), cache.rows(pairs.right), test_rows]))
    test_names = [cache.names[i] for i in test_rows]
    curve, distances = [], []
    for s in tqdm(range(len(model.steps)), desc=f"{model.name} steps"):
        codec = base_layer.BaseLayerCodec(model, s)
        payloads = {int(i): codec.compress(cache.features[i]) for i in needed}
        dec = cache.features.copy()
        for i, out in zip(payloads, base_layer.decode_many(list(payloads.values()))):
            dec[i] = out.feature
        sizes = [len(payloads[int(i)]) for i in test_rows]
        body = [len(base_layer.wire_body(payloads[int(i)])) for i in test_rows]
        v = verify(dec, cache, pairs)
        distances.append(v["distances"])
        curve.append({"param": float(model.steps[s]), "step": float(model.steps[s]), "step_index": s,
                      "bytes": per_person_mean(sizes, test_names), "bytes_per_image": float(np.mean(sizes)),
                      "stream_bytes": per_person_mean(body, test_names),
                      "accuracy": v["accuracy"], "accuracy_folds_9_10": v["accuracy_folds_9_10"]})
    return curve, model.name, distances


def previous_format_model(default: str) -> str | None:
    """The newest registered dlib model of another payload format than ``default``'s (for before/after)."""
    from facecodec import base_layer, zoo

    fmt = base_layer.load_model(default).format
    others = [e for e in zoo.entries(base_layer.KIND) if e.backend == "dlib-resnet-128"
              and base_layer.load_model(e.name).format != fmt]
    return max(others, key=lambda e: e.tag or 0).name if others else None


def quantizer_curves(cache: FeatureCache, pairs, quick: bool = False) -> dict[str, list[dict]]:
    """Plain quantizers of the same features at 8, 16, 24 and 32 bytes per face, trained on the train
    people (FAISS, one thread, so that k-means gives the same codebooks on every run), evaluated with
    the same 10-fold protocol. PQ and OPQ: ``M`` sub-quantizers of 8 bits (24 bytes: 32 of 6 bits, 128
    not being a multiple of 24), distances between the decoded vectors, as the server would match
    them. ITQ: one bit per PCA dimension after a learned rotation, Hamming distance; it has no code
    beyond 128 bits (16 bytes) for 128-D features."""
    import faiss

    faiss.omp_set_num_threads(1)
    train = cache.features[cache.split_rows("train")].astype(np.float32)
    needed = np.unique(np.concatenate([cache.rows(pairs.left), cache.rows(pairs.right)]))
    x = cache.features[needed].astype(np.float32)
    li = np.searchsorted(needed, cache.rows(pairs.left))
    ri = np.searchsorted(needed, cache.rows(pairs.right))
    layouts = {8: (8, 8), 16: (16, 8), 24: (32, 6), 32: (32, 8)}
    sizes = QUANTIZER_BYTES
    if quick:  # a handful of training vectors: 16 centroids a sub-quantizer, 8 and 16 bytes
        layouts, sizes = {8: (16, 4), 16: (32, 4)}, QUANTIZER_BYTES[:2]
    out: dict[str, list[dict]] = {"pq": [], "opq": [], "itq": []}
    for nbytes in tqdm(sizes, desc="pq / opq / itq"):
        m, nbits = layouts[nbytes]
        for name, spec in (("pq", f"PQ{m}x{nbits}"), ("opq", f"OPQ{m},PQ{m}x{nbits}")):
            if name == "opq" and len(train) < 256:  # OPQ's rotation is trained with 8-bit sub-quantizers
                out[name].append({"param": spec, "bytes": float(nbytes), "accuracy": None,
                                  "why": f"{len(train)} training vectors, fewer than OPQ's 256 centroids"})
                continue
            index = faiss.index_factory(train.shape[1], spec)
            index.train(train)
            assert index.sa_code_size() == nbytes
            dec = index.sa_decode(index.sa_encode(x))
            d = pair_distances(dec[li], dec[ri])
            res = ten_fold_accuracy(d, pairs.same, pairs.fold)
            out[name].append({"param": spec, "bytes": float(nbytes), "accuracy": res.accuracy,
                              "accuracy_folds_9_10": ten_fold_accuracy(d[pairs.fold >= 8], pairs.same[pairs.fold >= 8],
                                                                       pairs.fold[pairs.fold >= 8]).accuracy})
        if 8 * nbytes > min(train.shape):
            out["itq"].append({"param": f"ITQ{8 * nbytes}", "bytes": float(nbytes), "accuracy": None,
                               "why": f"ITQ codes one bit per PCA dimension: at most {min(train.shape)} bits here"})
            continue
        index = faiss.index_factory(train.shape[1], f"ITQ{8 * nbytes},LSH")
        index.train(train)
        codes = np.unpackbits(index.sa_encode(x), axis=1)
        d = (codes[li] != codes[ri]).sum(1).astype(np.float64)
        res = ten_fold_accuracy(d, pairs.same, pairs.fold)
        out["itq"].append({"param": f"ITQ{8 * nbytes},LSH", "bytes": float(nbytes), "accuracy": res.accuracy,
                           "accuracy_folds_9_10": ten_fold_accuracy(d[pairs.fold >= 8], pairs.same[pairs.fold >= 8],
                                                                    pairs.fold[pairs.fold >= 8]).accuracy,
                           "distance": "Hamming"})
    return out


def at_bytes(curve: list[dict], nbytes: float, key: str = "bytes") -> float | None:
    """Accuracy of ``curve`` interpolated at ``nbytes`` (None outside its range)."""
    pts = sorted((p[key], p["accuracy"]) for p in curve)
    if not pts or not pts[0][0] <= nbytes <= pts[-1][0]:
        return None
    return float(np.interp(nbytes, [b for b, _ in pts], [a for _, a in pts]))


def enrolled_from_photos(cache: FeatureCache, pairs, step_index: int, threshold: float) -> dict:
    """Left image as a photo enrolled at the server (its float feature, raw or through
    :func:`base_layer.comparable`), right image as a decoded base layer: accuracy at the server's
    threshold (fitted on decoded pairs) and 10-fold."""
    from facecodec import base_layer

    codec = base_layer.get_codec("dlib-resnet-128", step_index)
    li, ri = cache.rows(pairs.left), cache.rows(pairs.right)
    right = np.stack([codec.decompress(codec.compress(cache.features[i])).feature for i in ri])
    out = {}
    for name, left in (("raw", cache.features[li]), ("comparable", base_layer.comparable(cache.features[li], step_index=step_index))):
        d = pair_distances(left, right)
        far, frr = rates_at(d, pairs.same, threshold)
        out[name] = {"accuracy_at_threshold": float(np.mean((d <= threshold) == pairs.same)), "far": far, "frr": frr,
                     "accuracy": ten_fold_accuracy(d, pairs.same, pairs.fold).accuracy}
    return out


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
        max_bytes: float = 20.0, anchors: bool = True, per_fold: int = 30, workers: int = 2,
        quick: bool = False, quantizers: bool = True) -> dict:
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
    previous = previous_format_model(model)
    # The server matches decoded base-layer features: its threshold is fitted on those, at the default step.
    d_default = step_distances[default["step_index"]]
    thr_default = best_threshold(d_default, pairs.same)
    far_default, frr_default = rates_at(d_default, pairs.same, thr_default)
    enrolled = enrolled_from_photos(cache, pairs, default["step_index"], thr_default)
    pair_rows = np.unique(np.concatenate([cache.rows(pairs.left), cache.rows(pairs.right)]))
    curves = {"base_layer": curve}
    previous_default = None
    if previous is not None:
        from facecodec import base_layer

        curves["base_layer_format1"] = base_layer_curve(cache, pairs, test_rows, previous)[0]
        previous_default = curves["base_layer_format1"][base_layer.load_model(previous).default_step]
    comparison = None
    if quantizers:
        found = quantizer_curves(cache, pairs, quick)
        curves.update(found)
        comparison = {"bytes": list(QUANTIZER_BYTES), "accounting": "PQ, OPQ and ITQ codes have no header: their "
                      "bytes are the code size; the base layer's are interpolated along its curve, as payloads "
                      "(header and checksum included) and as stream bodies (what facewire.v2 carries per face)",
                      "accuracy": {name: [next((p["accuracy"] for p in pts if p["bytes"] == b), None)
                                          for b in QUANTIZER_BYTES] for name, pts in found.items()}}
        comparison["accuracy"]["base_layer_payload"] = [at_bytes(curve, b) for b in QUANTIZER_BYTES]
        comparison["accuracy"]["base_layer_stream"] = [at_bytes(curve, b, "stream_bytes") for b in QUANTIZER_BYTES]
        if "base_layer_format1" in curves:
            comparison["accuracy"]["base_layer_format1_payload"] = [at_bytes(curves["base_layer_format1"], b)
                                                                    for b in QUANTIZER_BYTES]
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
        "test_people": len({person_of(cache.names[i]) for i in test_rows}),
        "bytes_accounting": "bytes: per-person mean over the test people (each person's mean payload, then the "
                            "mean over people), header and checksum included; bytes_per_image: plain mean over "
                            "their images; stream_bytes: per-person mean of the body a facewire.v2 stream carries "
                            "per face (its Hello holds the header; the server recomputes the checksum)",
        "base_layer_model": model,
        "base_layer_format1_model": previous,
        "base_layer_format1_default_point": previous_default,
        "curves": curves,
        "quantizer_comparison": comparison,
        "compress_then_analyze": anchor_meta,
        "default_point": {"codec": "base_layer", "model": model, "step": default["step"],
                          "step_index": default["step_index"], "bytes": default["bytes"],
                          "bytes_per_image": default["bytes_per_image"], "stream_bytes": default["stream_bytes"],
                          "accuracy": default["accuracy"], "accuracy_folds_9_10": default["accuracy_folds_9_10"],
                          "float_accuracy_minus_accuracy": flt["accuracy"] - default["accuracy"],
                          "rule": f"the coarsest step that, with every finer step, stays within {tolerance:g} of "
                                  f"float accuracy, at {max_bytes:g} bytes (per person) or less",
                          "photo_enrolled_vs_decoded": enrolled,
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
    names = [cache.names[i] for i in rows]
    bases = {int(i): base_layer.encode(cache.features[i]) for i in rows}
    out = {}
    for name in ("jpeg", "jpeg2000", "webp", "avif"):
        pts = []
        for q in tqdm(CODECS[name].qualities[::2], desc=f"base+{name}", leave=False):
            sizes = [len(bases[int(i)]) + len(enhancement.encode(np.asarray(cache.chips[i]), bases[int(i)], name, q)) for i in rows]
            pts.append({"param": q, "bytes": per_person_mean(sizes, names), "bytes_per_image": float(np.mean(sizes)),
                        "accuracy": base_point["accuracy"]})
        out[f"base+{name}"] = pts
    return out
