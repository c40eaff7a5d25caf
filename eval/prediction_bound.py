"""``prediction-bound``: could any picture made from the base layer pay for the base layer?

Counting every byte, base + enhancement beats the image codec alone only if the prediction the
enhancement layer subtracts saves more bytes than the base layer and the enhancement header cost. The
best a prediction made from *identity* can do is bounded here by an oracle that knows the person
perfectly: the mean of that person's other photos (what a predictor that knew who it is, and nothing of
this photo's pose, light or expression, would draw for the squared error). The feature carries a little
more than identity (the shipped prediction head gains from it), so this is an estimate, not a proof.

On the test people with at least ``--least`` images (at most ``--per-person`` of each, per-person
means), AVIF at every quality, format 3's residual mode against three predictions, each with the
encoder's per-face choice between residual and direct coding (:func:`facecodec.enhancement.choose`, on
every byte), no restoration network (the prediction alone is measured):

- ``mean_face``: the mean train face (no knowledge of the person);
- ``shipped``: the registered prediction head on the decoded base layer (what the encoder subtracts);
- ``oracle``: the mean of the person's other test images.

Each is counted two ways against ``avif-compact`` (the crop coded directly, its container header deflated
as in ``rate_distortion.json``): ``total`` (base layer + enhancement payload, headers included: the
issue's "every byte") and ``ondemand`` (the enhancement payload alone). BD-rates over the whole range
and 28-36 dB, both PSNR averagings. ``python -m eval prediction-bound`` writes
``eval/results/prediction_bound.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.bd import bd_rate
from eval.prepare import FeatureCache
from eval.provenance import write_results
from eval.rate_distortion import BAND, RESULTS, aggregate, person_means
from facecodec.crop import face_crop

PREDICTIONS = ("mean_face", "shipped", "oracle")
HEADER = {"residual": 7, "direct": 6}  # format 3's header bytes, CRC included


def rows_of(cache: FeatureCache, least: int, per_person: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every test image of the people with at least ``least`` of them, and the rows measured (at most
    ``per_person`` of each, evenly spaced)."""
    people: dict[str, list[int]] = {}
    for r in cache.split_rows("test"):
        people.setdefault(cache.names[r].split("/")[0], []).append(int(r))
    kept = {p: np.array(rs) for p, rs in sorted(people.items()) if len(rs) >= least}
    measured = np.array(sorted(int(r) for rs in kept.values()
                               for r in rs[np.linspace(0, len(rs) - 1, min(per_person, len(rs))).astype(int)]))
    return kept, measured


def _measure(crop: np.ndarray, base: bytes, preds: dict[str, np.ndarray], qualities) -> np.ndarray:
    """(1 + predictions, qualities, [total bytes, enhancement bytes, mse, direct]) for one image; row 0 is
    the anchor (compact AVIF of the crop: total = enhancement = its bytes)."""
    from facecodec import enhancement, headers
    from facecodec.image_codecs import image_codec

    coder = image_codec("avif")
    dictionary = headers.dictionary(headers.default_tag())
    target = crop.astype(np.float64)
    out = np.zeros((1 + len(preds), len(qualities), 4))
    for k, q in enumerate(qualities):
        direct = enhancement.code(crop, np.zeros_like(target, np.int16), enhancement.DIRECT, coder, q)
        n_direct = len(headers.compact("avif", direct.stream, dictionary))
        out[0, k] = [n_direct, n_direct, np.mean((direct.face - target) ** 2), 1]
        for j, pred in enumerate(preds.values(), 1):
            resi = enhancement.code(crop, pred, enhancement.RESIDUAL, coder, q)
            n_resi = len(headers.compact("avif", resi.stream, dictionary))
            candidates = [(resi, n_resi + HEADER["residual"] + len(base)),
                          (direct, n_direct + HEADER["direct"] + len(base))]
            c, n = candidates[enhancement.choose(crop, candidates)]
            out[j, k] = [n, n - len(base), np.mean((c.face - target) ** 2), c.mode == enhancement.DIRECT]
    return out


def run(cache: FeatureCache, least: int = 10, per_person: int = 10,
        out: Path | None = RESULTS / "prediction_bound.json") -> dict:
    from eval.reconstruction import mean_chip
    from facecodec import base_layer, enhancement
    from facecodec.image_codecs import image_codec

    people, rows = rows_of(cache, least, per_person)
    qualities = list(image_codec("avif").qualities)
    mean_face = face_crop(mean_chip(cache, cache.split_rows("train"))).astype(np.int16)
    crops = {int(r): face_crop(np.asarray(cache.chips[r])) for rs in people.values() for r in rs}
    load_before = os.getloadavg()
    t = time.monotonic()
    per_image, person, base_bytes = [], [], []
    for r in tqdm(rows, desc="prediction-bound"):
        name = cache.names[r].split("/")[0]
        others = [crops[int(o)].astype(np.float64) for o in people[name] if o != r]
        base = base_layer.encode(cache.features[r])
        base_bytes.append(len(base))
        preds = {"mean_face": mean_face, "shipped": enhancement.prediction(base)[1],
                 "oracle": np.rint(np.mean(others, 0)).astype(np.int16)}
        per_image.append(_measure(crops[int(r)], base, preds, qualities))
        person.append(name)
    wall = time.monotonic() - t
    per_image = np.stack(per_image)  # (images, 1 + predictions, qualities, 4)
    index = {n: k for k, n in enumerate(sorted(set(person)))}
    n_img, n_cfg, n_q, _ = per_image.shape
    flat = np.zeros((n_img, n_cfg * n_q, 7))
    flat[:, :, 0], flat[:, :, 1], flat[:, :, 2] = (per_image[..., i].reshape(n_img, -1) for i in range(3))
    flat[:, :, 6] = per_image[..., 3].reshape(n_img, -1)
    agg = aggregate(person_means(flat, np.array([index[p] for p in person])))
    c = {m: agg[m].reshape(n_cfg, n_q) for m in ("bytes", "bytes_enhancement", "psnr", "psnr_mse", "direct")}
    bd = {}
    for j, name in enumerate(PREDICTIONS, 1):
        for acc, key in (("", "bytes"), ("_ondemand", "bytes_enhancement")):
            for metric, suffix in (("psnr", ""), ("psnr_mse", "_mse")):
                for band, tag in ((None, ""), (BAND, "_28_36")):
                    v = bd_rate(c["bytes"][0], c[metric][0], c[key][j], c[metric][j], band)
                    bd[f"{name}_vs_avif-compact{acc}{tag}{suffix}"] = None if v is None else round(v, 2)
    curves = {name: [{"param": q, "bytes": round(float(c["bytes"][j, k]), 2),
                      "bytes_enhancement": round(float(c["bytes_enhancement"][j, k]), 2),
                      "psnr": round(float(c["psnr"][j, k]), 3), "psnr_mse": round(float(c["psnr_mse"][j, k]), 3),
                      "direct_share": round(float(c["direct"][j, k]), 3)} for k, q in enumerate(qualities)]
              for j, name in enumerate(("avif-compact", *PREDICTIONS))}
    result = {"people": len(people), "images": int(n_img), "least_images": least, "per_person": per_person,
              "codec": "avif", "restoration": None, "base_layer_bytes": float(np.mean(base_bytes)), "bd_rate": bd,
              "bd_rate_note": "percent rate change against avif-compact at equal RGB PSNR (negative: fewer bytes); "
                              "keys <prediction>_vs_avif-compact[_ondemand][_28_36][_mse]; per-person means",
              "curves": curves, "wall_s": round(wall, 1), "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in os.getloadavg()], "processes": 1}
    return write_results(result, out)
