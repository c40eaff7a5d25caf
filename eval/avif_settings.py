"""AVIF encoder settings, measured for the plain face (the anchor) and for the enhancement layer.

Issue 17 names AVIF's encoder settings (speed, chroma, tune) as a lever for the enhancement layer to
beat AVIF. A setting is only a lever if it helps the enhancement layer more than it helps AVIF coding the
face itself, so each setting is measured on both sides, on the same test images, in one run:

- ``anchor``: the face crop coded with the setting, compact header (as ``avif-compact`` in
  ``rate_distortion.json``);
- ``total``: base layer + enhancement payload (format 3, the per-face residual/direct choice included)
  with the setting; ``ondemand``: the enhancement payload alone.

BD-rates (mean per-image PSNR, per-person means; ``_mse``: PSNR of the mean MSE), whole range and
28-36 dB, of each setting's scalable curve against its own anchor (is the setting a lever?) and against
the registered setting's anchor (what it does in absolute terms), and each anchor against the registered
one. ``encode_ms``: the mean time of one encode of a 112x112 crop at each setting (one process per core,
the machine's load recorded). ``python -m eval avif-settings`` writes ``eval/results/avif_settings.json``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.bd import bd_rate
from eval.prepare import FeatureCache
from eval.provenance import write_results
from eval.rate_distortion import RESULTS, _init, aggregate, person_means, test_rows
from facecodec.crop import CROP, face_crop

REGISTERED = "speed6"
SETTINGS: dict[str, dict] = {  # name -> options of facecodec.image_codecs._avif
    "speed6": {},
    "speed6_tune_psnr": {"tune": "psnr"},
    "speed6_444": {"subsampling": "4:4:4"},
    "speed4": {"speed": 4},
    "speed3": {"speed": 3},
    "speed3_tune_psnr": {"speed": 3, "tune": "psnr"},
}
BAND = (28.0, 36.0)


def _measure(job: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One image: (settings, sides anchor/scalable, qualities, [bytes, enhancement bytes, mse, encode s])."""
    from facecodec import base_layer, enhancement, headers
    from facecodec.image_codecs import image_codec, substituted

    chip, feature = job
    crop = face_crop(chip)
    target = crop.astype(np.float64)
    base = base_layer.encode(feature)
    dictionary = headers.dictionary(headers.default_tag())
    qualities = image_codec("avif").qualities
    out = np.zeros((len(SETTINGS), 2, len(qualities), 4))
    for s, options in enumerate(SETTINGS.values()):
        codec = image_codec("avif").with_options(**options)
        with substituted(codec):
            for k, q in enumerate(qualities):
                t = time.perf_counter()
                data = codec.encode(crop, q)
                spent = time.perf_counter() - t
                n = len(headers.compact("avif", data, dictionary))
                mse = np.mean((codec.decode(data, (CROP, CROP)) - target) ** 2)
                out[s, 0, k] = [n, n, mse, spent]
                t = time.perf_counter()
                payload = enhancement.encode(chip, base, "avif", q)
                spent = time.perf_counter() - t
                mse = np.mean((enhancement.decode(payload, base) - target) ** 2)
                out[s, 1, k] = [len(base) + len(payload), len(payload), mse, spent]
    return out


def _curves(per_image: np.ndarray, person: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per setting and side, the per-person-mean curve: bytes, bytes_enhancement, psnr, psnr_mse."""
    n_img, n_set, n_side, n_q, _ = per_image.shape
    rows = np.zeros((n_img, n_set * n_side * n_q, 7))
    flat = per_image.reshape(n_img, -1, 4)
    rows[:, :, 0], rows[:, :, 1], rows[:, :, 2] = flat[:, :, 0], flat[:, :, 1], flat[:, :, 2]
    agg = aggregate(person_means(rows, person))
    shape = (n_set, n_side, n_q)
    return {m: agg[m].reshape(shape) for m in ("bytes", "bytes_enhancement", "psnr", "psnr_mse")}


def run(cache: FeatureCache, images: int = 300, per_person: int = 1, workers: int = 2,
        out: Path | None = RESULTS / "avif_settings.json") -> dict:
    rows = test_rows(cache, images, per_person)
    jobs = [(np.asarray(cache.chips[i]), cache.features[i]) for i in rows]
    load_before = os.getloadavg()
    t = time.monotonic()
    with mp.get_context("spawn").Pool(workers, initializer=_init) as pool:
        per_image = np.stack(list(tqdm(pool.imap(_measure, jobs), total=len(jobs), desc="avif-settings")))
    wall = time.monotonic() - t
    names = [cache.names[i].split("/")[0] for i in rows]
    index = {n: k for k, n in enumerate(sorted(set(names)))}
    person = np.array([index[n] for n in names])
    c = _curves(per_image, person)
    ref = list(SETTINGS).index(REGISTERED)

    def bd(rate_side, rate_key, metric, setting, against_setting, band=None):
        v = bd_rate(c["bytes"][against_setting, 0], c[metric][against_setting, 0],
                    c[rate_key][setting, rate_side], c[metric][setting, rate_side], band)
        return None if v is None else round(v, 2)

    settings = {}
    for s, (name, options) in enumerate(SETTINGS.items()):
        entry: dict = {"options": options,
                       "encode_ms": {"anchor": round(float(per_image[:, s, 0, :, 3].mean()) * 1000, 2),
                                     "scalable": round(float(per_image[:, s, 1, :, 3].mean()) * 1000, 2)}}
        for metric, suffix in (("psnr", ""), ("psnr_mse", "_mse")):
            for band, tag in ((None, ""), (BAND, "_28_36")):
                entry[f"anchor_vs_registered_anchor{tag}{suffix}"] = bd(0, "bytes", metric, s, ref, band)
                entry[f"scalable_vs_own_anchor{tag}{suffix}"] = bd(1, "bytes", metric, s, s, band)
                entry[f"scalable_vs_registered_anchor{tag}{suffix}"] = bd(1, "bytes", metric, s, ref, band)
                entry[f"ondemand_vs_own_anchor{tag}{suffix}"] = bd(1, "bytes_enhancement", metric, s, s, band)
        entry["curves"] = {side: [{"param": int(q), "bytes": round(float(c["bytes"][s, i, k]), 2),
                                   "psnr": round(float(c["psnr"][s, i, k]), 3)}
                                  for k, q in enumerate(_qualities())]
                           for i, side in enumerate(("anchor", "scalable"))}
        settings[name] = entry
    result = {
        "dataset": "LFW deep-funneled, test people (splits/test_people.txt)",
        "images": int(len(rows)), "people": int(len(index)), "images_per_person": per_person,
        "registered": REGISTERED,
        "note": "BD-rate in percent at equal RGB PSNR, negative = fewer bytes; scalable = base layer + "
                "enhancement format 3, ondemand = enhancement only; anchor = AVIF of the face crop with a compact "
                "header; _28_36: the 28-36 dB band; _mse: PSNR of the mean MSE instead of the mean PSNR",
        "workers": workers, "wall_s": round(wall, 1),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "settings": settings,
    }
    return write_results(result, out)


def _qualities() -> tuple[int, ...]:
    from facecodec.image_codecs import image_codec

    return image_codec("avif").qualities
