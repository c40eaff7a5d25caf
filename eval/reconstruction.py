"""``reconstruction``: how good is the face rebuilt from the base layer alone (paper 3.2, Fig. 3).

On test people only: PSNR and MS-SSIM of the reconstruction against the aligned 112x112 crop,
beside the floor to beat (the mean train face, the same for everyone), as per-person means (each
person's mean, then the mean over people; ``..._per_image`` without the grouping, ``psnr_mse`` the PSNR
of the mean squared error); the share of test images on which the reconstruction beats the mean face;
dlib's verdict on every test face, the reconstruction pasted into the mean train chip (so that dlib
sees a 150x150 chip with no identity outside the crop) against the original image: "same person"
when their descriptors are closer than dlib's 0.6 (``same_person``, per person, and per image);
identity survival on folds 9-10 of pairs.txt (the test people) when the right image of every pair is
replaced by that pasted reconstruction (``identity_accuracy``, 10-fold); time per face on one core.

dlib judges twice: as above, and after both faces lose their finest detail (``same_person_degraded``:
the reconstruction and the original crop, each blurred by 1 px and passed through 56x56, both pasted
into the mean train chip). A network trained through dlib can carry identity in a fine texture that
dlib reads and people do not; that texture does not survive the degradation, a face's features do.

``identity_oracle`` bounds what any picture made from identity alone can score: on test people with at
least ten images, each image against the mean of that person's other images (what a predictor that knew
the person perfectly, and nothing of the pose, light or expression of this photo, would draw for the
squared error), beside the mean train face on the same images.

The display model (what an operator sees) gives the top-level figures; the prediction head that the
enhancement layer subtracts, when one is registered, is measured the same way under
``prediction_head``, and older display models under ``previous`` when asked for.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.lfw import lfw_root, read_pairs
from eval.metrics import ms_ssim, psnr
from eval.prepare import FeatureCache
from eval.provenance import write_results
from facecodec.crop import CHIP, CROP, face_crop

RESULTS = Path(__file__).parent / "results"


def mean_chip(cache: FeatureCache, rows: np.ndarray, limit: int = 3000) -> np.ndarray:
    """Mean 150x150 chip of (a sample of) the train images."""
    pick = rows[:: max(1, len(rows) // limit)]
    acc = np.zeros((CHIP, CHIP, 3), np.float64)
    for i in pick:
        acc += cache.chips[i]
    return np.rint(acc / len(pick)).astype(np.uint8)


def paste(chip: np.ndarray, crop: np.ndarray) -> np.ndarray:
    out = chip.copy()
    o = (CHIP - CROP) // 2
    out[o : o + CROP, o : o + CROP] = crop
    return out


SAME_PERSON = 0.6  # dlib's documented threshold


def run(cache: FeatureCache, model: str | None = None, limit: int | None = None, batch: int = 64,
        out: Path | None = RESULTS / "reconstruction.json", previous: tuple[str, ...] = ()) -> dict:
    """Figures of the display model (top level, the issue's schema) and, when one is registered,
    of the prediction head that the enhancement layer subtracts (``prediction_head``)."""
    import torch

    from facecodec import base_layer, reconstruction

    torch.set_num_threads(1)
    codec = base_layer.get_codec("dlib-resnet-128")
    test = cache.split_rows("test")
    if limit:
        test = test[:: max(1, len(test) // limit)]
    train_mean = mean_chip(cache, cache.split_rows("train"))
    decoded = {int(i): codec.decompress(codec.compress(cache.features[i])).feature for i in tqdm(test, desc="base layer")}
    display = reconstruction.load_reconstructor(model)
    result = _measure(cache, display, test, decoded, train_mean, batch)
    result.update({"base_layer_step": float(codec.model.steps[codec.step_index]), "head": "display"})
    predictor = reconstruction.default_name("prediction")
    if model is None and predictor != display.name:
        head = _measure(cache, reconstruction.load_reconstructor(predictor), test, decoded, train_mean, batch)
        result["prediction_head"] = _short(head)
    result["identity_oracle"] = identity_oracle(cache, test, train_mean)
    for name in previous:
        result.setdefault("previous", {})[name] = _short(_measure(cache, reconstruction.load_reconstructor(name), test,
                                                                  decoded, train_mean, batch))
    return write_results(result, out)


def identity_oracle(cache: FeatureCache, test: np.ndarray, train_mean: np.ndarray, least: int = 10) -> dict:
    """Each image of the test people with at least ``least`` images against the mean of the person's
    other images, and against the mean train face (of the chip ``train_mean``; per-person means)."""
    people = np.array([cache.names[i].split("/")[0] for i in test])
    mean_crop = face_crop(train_mean).astype(np.float64)
    own, floor, better = [], [], []
    names = [p for p in sorted(set(people)) if np.sum(people == p) >= least]
    for p in names:
        crops = np.stack([face_crop(np.asarray(cache.chips[i])) for i in test[people == p]]).astype(np.float64)
        total = crops.sum(0)
        mse = np.array([np.mean((x - (total - x) / (len(crops) - 1)) ** 2) for x in crops])
        mse0 = np.array([np.mean((x - mean_crop) ** 2) for x in crops])
        own.append(np.mean(10 * np.log10(255**2 / mse)))
        floor.append(np.mean(10 * np.log10(255**2 / mse0)))
        better.append(np.mean(mse < mse0))
    return {"people": len(names), "images": int(sum(np.sum(people == p) for p in names)),
            "psnr": float(np.mean(own)) if names else None, "mean_face_psnr": float(np.mean(floor)) if names else None,
            "better_than_mean_face": float(np.mean(better)) if names else None,
            "protocol": f"test people with at least {least} images: each image against the mean of the person's "
                        "other images (per-person means)"}


def _degraded(crops: np.ndarray) -> np.ndarray:
    """uint8 crops (N, 112, 112, 3) blurred by 1 px and passed through 56x56, as :func:`eval.metrics.degrade`."""
    import torch

    from eval.metrics import degrade

    t = torch.from_numpy(np.asarray(crops, np.float32)).permute(0, 3, 1, 2)
    return np.clip(np.rint(degrade(t, 1.0, 56).permute(0, 2, 3, 1).numpy()), 0, 255).astype(np.uint8)


def _short(figures: dict) -> dict:
    return {k: v for k, v in figures.items() if k not in ("resolution", "crop", "images", "people", "identity_protocol",
                                                          "same_person_protocol", "same_person_degraded_protocol")
            and not k.startswith("mean_face")}


def _per_person(values, people: list[str]) -> float:
    groups: dict[str, list] = {}
    for v, p in zip(values, people):
        groups.setdefault(p, []).append(v)
    return float(np.mean([np.mean(g) for g in groups.values()]))


def _parameters(rec) -> int | None:
    """Weights and buffers of a registered reconstruction model (its runtime file)."""
    head = rec.head
    if hasattr(head, "weight_t"):
        return int(head.weight_t.size + head.bias.size + head.feat_mean.size + head.feat_std.size)
    try:
        import onnx
        from onnx import numpy_helper

        from facecodec import zoo

        m = onnx.load_from_string(zoo.model_path(rec.name).read_bytes())
        return int(sum(numpy_helper.to_array(t).size for t in m.graph.initializer))
    except ImportError:
        return None


def _measure(cache: FeatureCache, rec, test: np.ndarray, decoded: dict, train_mean: np.ndarray, batch: int) -> dict:
    from facecodec import base_layer
    from facecodec.frontend.features import DlibResnet128
    from facecodec.verification import pair_distances, ten_fold_accuracy

    codec = base_layer.get_codec("dlib-resnet-128")
    mean_crop = face_crop(train_mean)
    psnrs, mean_psnrs, ssims, recs, mses, mean_mses, originals = [], [], [], {}, [], [], {}
    t_rec = 0.0
    for s in tqdm(range(0, len(test), batch), desc=f"reconstruct ({rec.name})"):
        idx = test[s : s + batch]
        feats = np.stack([decoded[int(i)] for i in idx])
        t0 = time.perf_counter()
        out_imgs = rec(feats)
        t_rec += time.perf_counter() - t0
        crops = np.stack([face_crop(np.asarray(cache.chips[i])) for i in idx])
        psnrs += [psnr(a, b) for a, b in zip(out_imgs, crops)]
        mean_psnrs += [psnr(mean_crop, b) for b in crops]
        mses += [float(np.mean((a.astype(np.float64) - b) ** 2)) for a, b in zip(out_imgs, crops)]
        mean_mses += [float(np.mean((mean_crop.astype(np.float64) - b) ** 2)) for b in crops]
        ssims += list(ms_ssim(out_imgs, crops))
        recs.update(zip(idx.tolist(), out_imgs))
        originals.update(zip(idx.tolist(), crops))
    # one face at a time, as the server does it
    t0 = time.perf_counter()
    for i in test[:50]:
        rec(decoded[int(i)][None])
    ms_single = (time.perf_counter() - t0) / min(50, len(test)) * 1000

    pairs = read_pairs(lfw_root())
    sel = np.flatnonzero(pairs.fold >= 8)
    dlib = DlibResnet128()
    left = cache.rows([pairs.left[k] for k in sel])
    right = cache.rows([pairs.right[k] for k in sel])
    have = np.array([r in recs for r in right])
    if not have.all():  # --limit: reconstruct the missing right images too
        for r in right[~have]:
            f = codec.decompress(codec.compress(cache.features[r])).feature
            recs[int(r)] = rec(f[None])[0]
    pasted = {int(r): dlib.embed([paste(train_mean, recs[int(r)])])[0] for r in tqdm(recs, desc="identity")}
    rec_feats = np.stack([pasted[int(r)] for r in right])
    d_rec = pair_distances(cache.features[left], rec_feats)
    d_orig = pair_distances(cache.features[left], cache.features[right])
    same, fold = pairs.same[sel], pairs.fold[sel]
    identity = ten_fold_accuracy(d_rec, same, fold)
    original = ten_fold_accuracy(d_orig, same, fold)
    people = [cache.names[i].split("/")[0] for i in test]
    d_self = np.array([np.linalg.norm(pasted[int(i)] - cache.features[i]) for i in test])
    blurred = {}
    for s in tqdm(range(0, len(test), batch), desc="identity, degraded"):
        idx = [int(i) for i in test[s : s + batch]]
        a = _degraded(np.stack([recs[i] for i in idx]))
        b = _degraded(np.stack([originals[i] for i in idx]))
        fa = dlib.embed([paste(train_mean, x) for x in a])
        fb = dlib.embed([paste(train_mean, x) for x in b])
        blurred.update(zip(idx, np.linalg.norm(np.asarray(fa) - np.asarray(fb), axis=1)))
    d_blur = np.array([blurred[int(i)] for i in test])
    better = np.array(psnrs) > np.array(mean_psnrs)
    n_params = _parameters(rec)
    return {
        "model": rec.name,
        "resolution": [CROP, CROP],
        "crop": "centre 112x112 of dlib's 150x150 aligned chip (padding 0.25), LFW deep-funneled",
        "images": int(len(test)),
        "people": len(set(people)),
        "psnr": _per_person(psnrs, people),
        "mean_face_psnr": _per_person(mean_psnrs, people),
        "psnr_per_image": float(np.mean(psnrs)),
        "mean_face_psnr_per_image": float(np.mean(mean_psnrs)),
        "psnr_mse": float(10 * np.log10(255**2 / np.mean(mses))),
        "mean_face_psnr_mse": float(10 * np.log10(255**2 / np.mean(mean_mses))),
        "better_than_mean_face": float(np.mean(better)),
        "better_than_mean_face_per_person": _per_person(better, people),
        "ms_ssim": _per_person(ssims, people),
        "mean_face_ms_ssim": float(np.mean(ms_ssim(np.repeat(mean_crop[None], len(test[:64]), 0), np.stack(
            [face_crop(np.asarray(cache.chips[i])) for i in test[:64]])))),
        "same_person": _per_person(d_self < SAME_PERSON, people),
        "same_person_per_image": float(np.mean(d_self < SAME_PERSON)),
        "identity_distance": float(np.mean(d_self)),
        "same_person_degraded": _per_person(d_blur < SAME_PERSON, people),
        "same_person_degraded_protocol": "every test face: the reconstruction and the original crop, each blurred "
                                         "by 1 px and passed through 56x56, pasted into the mean train chip; "
                                         f"dlib's descriptors closer than {SAME_PERSON}",
        "same_person_protocol": f"every test face: dlib's descriptor of the reconstruction pasted into the mean train chip "
                                f"against the original's, closer than {SAME_PERSON} (dlib's threshold)",
        "identity_accuracy": identity.accuracy,
        "identity_accuracy_original": original.accuracy,
        "identity_pairs": int(len(sel)),
        "identity_protocol": "folds 9-10 of pairs.txt; right image replaced by its reconstruction pasted into the mean train chip",
        "ms_per_face": ms_single,
        "ms_per_face_batched": t_rec / len(test) * 1000,
        "parameters": n_params,
        "memory_mb_fp32": n_params * 4 / 2**20 if n_params else None,
    }


def grid(cache: FeatureCache, path: Path, n: int = 8, models: list[str] | None = None) -> Path:
    """Originals over the reconstructions of each of ``models`` (default: the display network, and the
    prediction head when it is another model), one row each, for a fixed set of test faces (the
    paper's Fig. 3, first rows)."""
    from PIL import Image

    from facecodec import base_layer, reconstruction

    if models is None:
        models = [reconstruction.default_name()]
        if reconstruction.default_name("prediction") != models[0]:
            models.append(reconstruction.default_name("prediction"))
    codec = base_layer.get_codec("dlib-resnet-128")
    test = cache.split_rows("test")
    pick = test[:: len(test) // n][:n]
    top = [face_crop(np.asarray(cache.chips[i])) for i in pick]
    feats = np.stack([codec.decompress(codec.compress(cache.features[i])).feature for i in pick])
    rows = [top] + [list(reconstruction.load_reconstructor(m)(feats)) for m in models]
    canvas = np.concatenate([np.concatenate(r, 1) for r in rows], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path
