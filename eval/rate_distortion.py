"""``rate-distortion``: image quality against bytes on test people (paper Figs. 4-5).

Every codec compresses the same aligned crop (the centre 112x112 of dlib's 150x150 chip, LFW
deep-funneled). Anchors code the crop directly, as a plain file and with its container header deflated
like the enhancement layer's (``-compact``); scalable configurations send the base layer plus one
enhancement layer. Failures (a codec that produces no decodable file) are counted per point, never
dropped silently.

Accountings (every figure says which it uses):

- **total** (the headline): every byte that travels for a scalable face, base layer (with its header)
  plus enhancement payload (with its header); an anchor's file or compact stream.
- **ondemand**: the enhancement payload alone, what an operator's Verify costs once the base layer is
  at the server.
- **container**: the scalable container file (base + enhancement + the container's 10 bytes) against
  the anchors' plain files: a file-level comparison.

Averaging: test images are grouped by person; each person's mean is taken, then the mean over people
(per-person means, so that one person with many images does not weigh more). PSNR is averaged two
ways: ``psnr``, the mean of each image's PSNR, and ``psnr_mse``, the PSNR of the mean squared error.
BD-rates (VCEG-M33) are given over the whole common range and over the 28-36 dB band (keys ending
in ``_28_36``), for each averaging (``bd_rate``, ``bd_rate_mse``), with 95% bootstrap intervals over
people (``..._ci``).
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.bd import bd_rate
from eval.metrics import LUMA, ms_ssim
from eval.prepare import FeatureCache
from eval.provenance import write_results
from facecodec.crop import CROP, face_crop

RESULTS = Path(__file__).parent / "results"
ANCHORS = ("jpeg", "jpeg2000", "webp", "avif")
ENHANCEMENT = ("jpeg", "jpeg2000", "webp", "avif")
LEARNED = ("learned", "conditional")  # experiments: measured only with --learned
ABLATIONS = ("avif",)  # codecs also measured as format 2 and as format 3 without restoration
BAND = (28.0, 36.0)
BOOTSTRAP = 200
QUICK_IMAGES = 24
CONTAINER_OVERHEAD = 10  # facecodec.container: magic, count, 3 bytes per layer (2 layers), CRC-16


def _init() -> None:
    import torch

    torch.set_num_threads(1)


def _name(kind: str, codec: str) -> str:
    return {"anchor": codec, "compact": f"{codec}-compact", "base": "base_layer", "format2": f"base+{codec}-format2",
            "norestore": f"base+{codec}-norestore"}.get(kind, f"base+{codec}")


def _measure(job: tuple[np.ndarray, np.ndarray, list[tuple[str, str, int]]]) -> np.ndarray:
    """For one image, a row per config: total bytes, enhancement bytes, MSE, luma MSE, MS-SSIM, failed,
    direct mode (format 3)."""
    from facecodec import base_layer, enhancement, headers, reconstruction
    from facecodec.image_codecs import image_codec

    chip, feature, configs = job
    crop = face_crop(chip)
    base = base_layer.encode(feature)
    rows = np.zeros((len(configs), 7))
    outs = []
    anchor_file: dict[tuple[str, int], bytes] = {}
    for k, (kind, codec, q) in enumerate(configs):
        try:
            direct = 0.0
            if kind in ("anchor", "compact"):
                c = image_codec(codec)
                data = anchor_file.get((codec, q)) or c.encode(crop, q)
                anchor_file[(codec, q)] = data
                out, n = c.decode(data, (CROP, CROP)), len(data)
                tag = headers.default_tag()
                if kind == "compact" and tag:
                    n = len(headers.compact(codec, data, headers.dictionary(tag)))
                enh = n
            elif kind == "base":
                out, n, enh = reconstruction.reconstruct(base), len(base), 0
            else:
                enh_payload = enhancement.encode(chip, base, codec, q, version=2 if kind == "format2" else None,
                                                 restore=kind != "norestore")
                out, enh = enhancement.decode(enh_payload, base), len(enh_payload)
                n = len(base) + enh
                h = enhancement.read_header(enh_payload)
                direct = float(h.mode == enhancement.DIRECT)
            err = out.astype(np.float64) - crop
            rows[k, :5] = [n, enh, np.mean(err**2), np.mean((err @ LUMA) ** 2), 0.0]
            rows[k, 6] = direct
            outs.append(out)
        except Exception:  # a codec that cannot produce this point: counted as a failure
            rows[k, 5] = 1
            outs.append(crop)
    rows[:, 4] = ms_ssim(np.stack(outs), np.repeat(crop[None], len(outs), 0))
    return rows


def configs(quick: bool, learned: bool = False) -> list[tuple[str, str, int]]:
    from facecodec.image_codecs import CODECS

    def ladder(name):
        qs = CODECS[name].qualities
        return qs[::2] if quick else qs

    out = [("base", "base_layer", 0)]
    for name in ANCHORS:
        out += [(kind, name, q) for kind in ("anchor", "compact") for q in ladder(name)]
    for name in ENHANCEMENT + (tuple(n for n in LEARNED if CODECS[n].qualities) if learned else ()):
        out += [("scalable", name, q) for q in ladder(name)]
    for name in ABLATIONS:
        out += [(kind, name, q) for kind in ("format2", "norestore") for q in ladder(name)]
    return out


def test_rows(cache: FeatureCache, images: int | None = None, per_person: int | None = None) -> np.ndarray:
    """The test people's rows: at most ``per_person`` images of each person (evenly spaced among theirs),
    then ``images`` of those evenly spaced when given."""
    rows = cache.split_rows("test")
    if per_person:
        people: dict[str, list[int]] = {}
        for r in rows:
            people.setdefault(cache.names[r].split("/")[0], []).append(int(r))
        rows = np.array(sorted(r for rs in people.values()
                               for r in np.asarray(rs)[np.linspace(0, len(rs) - 1, min(per_person, len(rs))).astype(int)]))
    if images and images < len(rows):
        rows = rows[np.linspace(0, len(rows) - 1, images).astype(int)]
    return rows


def _db(mse):
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def person_means(per_image: np.ndarray, person: np.ndarray) -> dict[str, np.ndarray]:
    """Each person's mean of every measure (people, configs), and ``has`` (the person has a decoded image)."""
    n_people = int(person.max()) + 1
    ok = per_image[:, :, 5] == 0  # (images, configs)
    count = np.zeros((n_people, per_image.shape[1]))
    np.add.at(count, person, ok)
    out = {"has": count > 0}
    measures = {"bytes": per_image[:, :, 0], "bytes_enhancement": per_image[:, :, 1], "mse": per_image[:, :, 2],
                "psnr": _db(per_image[:, :, 2]), "psnr_y": _db(per_image[:, :, 3]), "ms_ssim": per_image[:, :, 4],
                "direct": per_image[:, :, 6]}
    for key, values in measures.items():
        s = np.zeros_like(count)
        np.add.at(s, person, np.where(ok, values, 0))
        out[key] = s / np.maximum(count, 1)
    return out


def aggregate(pm: dict[str, np.ndarray], weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The (weighted) mean over people of every person's mean: arrays (configs,); ``psnr_mse`` is the PSNR
    of the mean over people of each person's mean squared error."""
    w = pm["has"] * (1.0 if weights is None else weights[:, None])
    total = np.maximum(w.sum(0), 1e-12)
    out = {k: (pm[k] * w).sum(0) / total for k in ("bytes", "bytes_enhancement", "psnr", "psnr_y", "ms_ssim", "direct")}
    out["psnr_mse"] = _db((pm["mse"] * w).sum(0) / total)
    return out


def bd_table(curves: dict[str, dict], metric: str) -> dict[str, float | None]:
    """BD-rates of every scalable configuration against every anchor, in every accounting, whole range
    and 28-36 dB band. ``curves[name]`` holds arrays ``bytes``, ``bytes_enhancement`` and ``metric``."""
    out = {}
    anchors = [a for a in ANCHORS if a in curves] + [f"{a}-compact" for a in ANCHORS if f"{a}-compact" in curves]
    for s in [n for n in curves if n.startswith("base+")]:
        B = curves[s]
        for a in anchors:
            A = curves[a]
            accountings = {"": B["bytes"], "_ondemand": B["bytes_enhancement"]}
            if "-compact" not in a:
                accountings["_container"] = B["bytes"] + CONTAINER_OVERHEAD
            for acc, rate in accountings.items():
                for band, suffix in ((None, ""), (BAND, "_28_36")):
                    out[f"{s}_vs_{a}{acc}{suffix}"] = bd_rate(A["bytes"], A[metric], rate, B[metric], band)
    return out


def run(cache: FeatureCache, images: int | None = None, workers: int = 2, quick: bool = False,
        out: Path | None = RESULTS / "rate_distortion.json", per_person: int | None = 2, learned: bool = False,
        bootstrap: int = BOOTSTRAP) -> dict:
    from facecodec import enhancement, reconstruction, restoration, zoo

    rows = test_rows(cache, QUICK_IMAGES if quick and not images else images, None if quick else per_person)
    cfg = configs(quick, learned)
    jobs = [(np.asarray(cache.chips[i]), cache.features[i], cfg) for i in rows]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init) as pool:
            per_image = list(tqdm(pool.imap(_measure, jobs, chunksize=2), total=len(jobs), desc="rate-distortion"))
    else:
        _init()
        per_image = [_measure(j) for j in tqdm(jobs, desc="rate-distortion")]
    per_image = np.stack(per_image)  # (images, configs, 7)
    names = [cache.names[i].split("/")[0] for i in rows]
    index = {n: k for k, n in enumerate(sorted(set(names)))}
    person = np.array([index[n] for n in names])
    pm = person_means(per_image, person)
    agg = aggregate(pm)
    failures = per_image[:, :, 5].sum(0)
    curves: dict[str, list[dict]] = {}
    arrays: dict[str, dict[str, list]] = {}
    for k, (kind, codec, q) in enumerate(cfg):
        name = _name(kind, codec)
        if failures[k] == len(rows):
            curves.setdefault(name, []).append({"param": q, "failures": int(failures[k])})
            continue
        point = {"param": q, "bytes": float(agg["bytes"][k]), "bpp": float(agg["bytes"][k]) * 8 / (CROP * CROP),
                 "psnr": float(agg["psnr"][k]), "psnr_mse": float(agg["psnr_mse"][k]), "psnr_y": float(agg["psnr_y"][k]),
                 "ms_ssim": float(agg["ms_ssim"][k]), "failures": int(failures[k])}
        if name.startswith("base+"):
            point["bytes_enhancement"] = float(agg["bytes_enhancement"][k])
            if kind != "format2":
                point["direct_share"] = float(agg["direct"][k])
        curves.setdefault(name, []).append(point)
        a = arrays.setdefault(name, {"k": [], "bytes": [], "bytes_enhancement": [], "psnr": [], "psnr_mse": []})
        a["k"].append(k)
    bd, bd_mse = {}, {}
    point_arrays = {n: {m: agg[m][a["k"]] for m in ("bytes", "bytes_enhancement", "psnr", "psnr_mse")}
                    for n, a in arrays.items()}
    bd = bd_table(point_arrays, "psnr")
    bd_mse = bd_table(point_arrays, "psnr_mse")
    # 95% intervals: people resampled with replacement
    rng = np.random.default_rng(0)
    samples: dict[str, list] = {}
    for _ in range(bootstrap):
        w = np.bincount(rng.integers(0, len(index), len(index)), minlength=len(index)).astype(float)
        b = aggregate(pm, w)
        pa = {n: {m: b[m][a["k"]] for m in ("bytes", "bytes_enhancement", "psnr", "psnr_mse")} for n, a in arrays.items()}
        for prefix, table in (("", bd_table(pa, "psnr")), ("mse:", bd_table(pa, "psnr_mse"))):
            for key, v in table.items():
                samples.setdefault(prefix + key, []).append(v)

    def ci(key):
        v = [x for x in samples.get(key, []) if x is not None]
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) >= 0.9 * max(bootstrap, 1) and v else None

    recon = [reconstruction.default_name()] if zoo.entries(reconstruction.KIND) else []
    result = {
        "dataset": "LFW deep-funneled, test people (splits/test_people.txt)",
        "images": int(len(rows)),
        "people": int(len(index)),
        "images_per_person": per_person if not quick else None,
        "resolution": [CROP, CROP],
        "crop": "centre 112x112 of dlib's 150x150 aligned chip (padding 0.25)",
        "quick": quick,
        "averaging": "per-person means (each person's mean, then the mean over people); psnr = mean of per-image "
                     "PSNR, psnr_mse = PSNR of the mean squared error",
        "accounting": {"total": "base layer + enhancement payload, headers included (anchors: file or compact stream)",
                       "ondemand": "enhancement payload only (the base layer is already at the server)",
                       "container": f"scalable container file (+{CONTAINER_OVERHEAD} bytes) against the anchors' plain files"},
        "reconstruction_model": recon[-1] if recon else None,
        "prediction_model": reconstruction.default_name("prediction") if recon else None,
        "restoration_models": {c: (r.name if (r := restoration.for_codec(c)) else None) for c in ENHANCEMENT},
        "enhancement_format": enhancement.VERSION,
        "curves": curves,
        "bd_rate": bd,
        "bd_rate_ci": {k: ci(k) for k in bd},
        "bd_rate_mse": bd_mse,
        "bd_rate_mse_ci": {k: ci("mse:" + k) for k in bd_mse},
        "bd_rate_note": "percent rate change at equal RGB PSNR (negative: the scalable configuration needs fewer "
                        "bytes); keys <scalable>_vs_<anchor>[_ondemand|_container][_28_36]; bd_rate averages PSNR "
                        "per image, bd_rate_mse converts the mean MSE; _ci: 95% bootstrap interval over people "
                        f"({bootstrap} resamples)",
    }
    return write_results(result, out)
