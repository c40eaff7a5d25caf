"""``rate-distortion``: image quality against bits per pixel on test people (paper Figs. 4-5).

Every codec compresses the same aligned crop (the centre 112x112 of dlib's 150x150 chip,
LFW deep-funneled). Anchors code the crop directly; scalable configurations send the base
layer plus one enhancement layer, and the base layer's bytes always count in the total. The
base layer alone (its reconstruction) is one more point. Failures (a codec that produces no
decodable file) are counted per point, never dropped silently.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.bd import bd_rate
from eval.metrics import ms_ssim, psnr, psnr_luma
from eval.prepare import FeatureCache
from eval.provenance import write_results
from facecodec.crop import CROP, face_crop

RESULTS = Path(__file__).parent / "results"
ANCHORS = ("jpeg", "jpeg2000", "webp", "avif")
ENHANCEMENT = ("jpeg", "jpeg2000", "webp", "avif")
LEARNED = ("learned", "conditional")  # measured when the model zoo holds their rate points
QUICK_IMAGES = 24


def _init() -> None:
    import torch

    torch.set_num_threads(1)


def _measure(job: tuple[np.ndarray, np.ndarray, list[tuple[str, str, int]]]) -> list[tuple[str, int, int, float, float, float, bool]]:
    """For one image: (config, param, bytes, psnr, psnr_y, ms_ssim, failed) for every config."""
    from facecodec import base_layer, enhancement, headers, reconstruction
    from facecodec.image_codecs import image_codec

    chip, feature, configs = job
    crop = face_crop(chip)
    base = base_layer.encode(feature)
    rows, outs = [], []
    anchor_file: dict[tuple[str, int], bytes] = {}
    for kind, codec, q in configs:
        name = {"anchor": codec, "compact": f"{codec}-compact", "base": "base_layer"}.get(kind, f"base+{codec}")
        try:
            if kind in ("anchor", "compact"):
                # "compact": the same anchor file with its header deflated like the enhancement layer's
                c = image_codec(codec)
                data = anchor_file.get((codec, q)) or c.encode(crop, q)
                anchor_file[(codec, q)] = data
                out, n = c.decode(data, (CROP, CROP)), len(data)
                tag = headers.default_tag()
                if kind == "compact" and tag:
                    n = len(headers.compact(codec, data, headers.dictionary(tag)))
            elif kind == "base":
                out, n = reconstruction.reconstruct(base), len(base)
            else:
                enh = enhancement.encode(chip, base, codec, q)
                out, n = enhancement.decode(enh, base), len(base) + len(enh)
            rows.append([name, q, n, psnr(out, crop), psnr_luma(out, crop), 0.0, False])
            outs.append(out)
        except Exception:  # a codec that cannot produce this point: counted as a failure
            rows.append([name, q, 0, 0.0, 0.0, 0.0, True])
            outs.append(crop)
    ss = ms_ssim(np.stack(outs), np.repeat(crop[None], len(outs), 0))
    for r, s in zip(rows, ss):
        r[5] = float(s)
    return [tuple(r) for r in rows]


def configs(quick: bool) -> list[tuple[str, str, int]]:
    from facecodec.image_codecs import CODECS

    out = [("base", "base_layer", 0)]
    for name in ANCHORS:
        qs = CODECS[name].qualities
        out += [("anchor", name, q) for q in (qs[::2] if quick else qs)]
        out += [("compact", name, q) for q in (qs[::2] if quick else qs)]
    for name in ENHANCEMENT + tuple(n for n in LEARNED if CODECS[n].qualities):
        qs = CODECS[name].qualities
        out += [("scalable", name, q) for q in (qs[::2] if quick else qs)]
    return out


def test_rows(cache: FeatureCache, images: int | None) -> np.ndarray:
    """The test people's rows, or ``images`` of them evenly spaced."""
    rows = cache.split_rows("test")
    if images and images < len(rows):
        rows = rows[np.linspace(0, len(rows) - 1, images).astype(int)]
    return rows


def run(cache: FeatureCache, images: int | None = None, workers: int = 2, quick: bool = False,
        out: Path | None = RESULTS / "rate_distortion.json") -> dict:
    from facecodec import reconstruction, zoo

    rows = test_rows(cache, QUICK_IMAGES if quick and not images else images)
    cfg = configs(quick)
    jobs = [(np.asarray(cache.chips[i]), cache.features[i], cfg) for i in rows]
    per_image = []
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init) as pool:
            for r in tqdm(pool.imap(_measure, jobs, chunksize=4), total=len(jobs), desc="rate-distortion"):
                per_image.append(r)
    else:
        _init()
        per_image = [_measure(j) for j in tqdm(jobs, desc="rate-distortion")]
    curves: dict[str, list[dict]] = {}
    for k in range(len(cfg)):
        pts = [img[k] for img in per_image]
        ok = [p for p in pts if not p[6]]
        name, q = pts[0][0], pts[0][1]
        if not ok:
            curves.setdefault(name, []).append({"param": q, "failures": len(pts)})
            continue
        b = float(np.mean([p[2] for p in ok]))
        curves.setdefault(name, []).append({
            "param": q, "bytes": b, "bpp": b * 8 / (CROP * CROP),
            "psnr": float(np.mean([p[3] for p in ok])), "psnr_y": float(np.mean([p[4] for p in ok])),
            "ms_ssim": float(np.mean([p[5] for p in ok])), "failures": len(pts) - len(ok)})
    bd = {}
    for s in [n for n in curves if n.startswith("base+")]:
        for a in ANCHORS + tuple(f"{a}-compact" for a in ANCHORS):
            A = [p for p in curves.get(a, []) if "bytes" in p]
            B = [p for p in curves[s] if "bytes" in p]
            v = bd_rate([p["bpp"] for p in A], [p["psnr"] for p in A], [p["bpp"] for p in B], [p["psnr"] for p in B])
            bd[f"{s}_vs_{a}"] = v
    recon = [reconstruction.default_name()] if zoo.entries(reconstruction.KIND) else []
    result = {
        "dataset": "LFW deep-funneled, test people (splits/test_people.txt)",
        "images": int(len(rows)),
        "resolution": [CROP, CROP],
        "crop": "centre 112x112 of dlib's 150x150 aligned chip (padding 0.25)",
        "quick": quick,
        "reconstruction_model": recon[-1] if recon else None,
        "curves": curves,
        "bd_rate": bd,
        "bd_rate_note": "percent bitrate change at equal RGB PSNR (negative: the scalable configuration needs fewer bits)",
    }
    return write_results(result, out)
