"""``reconstruction``: how good is the face rebuilt from the base layer alone (paper 3.2, Fig. 3).

On test people only: PSNR and MS-SSIM of the reconstruction against the aligned 112x112 crop,
beside the floor to beat (the mean train face, the same for everyone); identity survival on
folds 9-10 of pairs.txt (the test people) when the right image of every pair is replaced by
the reconstruction of its decoded base layer, pasted into the mean train chip so that dlib
sees a 150x150 chip with no identity outside the crop; time per face on one core. The display
model (what an operator sees) gives the top-level figures; the prediction head that the
enhancement layer subtracts, when one is registered, is measured the same way under
``prediction_head``.
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


def run(cache: FeatureCache, model: str | None = None, limit: int | None = None, batch: int = 64,
        out: Path | None = RESULTS / "reconstruction.json") -> dict:
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
        result["prediction_head"] = {k: v for k, v in head.items() if k not in ("resolution", "crop", "images",
                                                                              "identity_protocol", "mean_face_psnr",
                                                                              "mean_face_ms_ssim")}
    return write_results(result, out)


def _measure(cache: FeatureCache, rec, test: np.ndarray, decoded: dict, train_mean: np.ndarray, batch: int) -> dict:
    from facecodec import base_layer
    from facecodec.frontend.features import DlibResnet128
    from facecodec.verification import pair_distances, ten_fold_accuracy

    codec = base_layer.get_codec("dlib-resnet-128")
    mean_crop = face_crop(train_mean)
    psnrs, mean_psnrs, ssims, recs = [], [], [], {}
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
        ssims += list(ms_ssim(out_imgs, crops))
        recs.update(zip(idx.tolist(), out_imgs))
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
    rec_feats = np.stack([dlib.embed([paste(train_mean, recs[int(r)])])[0] for r in tqdm(right, desc="identity")])
    d_rec = pair_distances(cache.features[left], rec_feats)
    d_orig = pair_distances(cache.features[left], cache.features[right])
    same, fold = pairs.same[sel], pairs.fold[sel]
    identity = ten_fold_accuracy(d_rec, same, fold)
    original = ten_fold_accuracy(d_orig, same, fold)
    n_params = sum(p.numel() for p in rec.net.parameters()) + sum(b.numel() for b in rec.net.buffers())
    return {
        "model": rec.name,
        "resolution": [CROP, CROP],
        "crop": "centre 112x112 of dlib's 150x150 aligned chip (padding 0.25), LFW deep-funneled",
        "images": int(len(test)),
        "psnr": float(np.mean(psnrs)),
        "mean_face_psnr": float(np.mean(mean_psnrs)),
        "ms_ssim": float(np.mean(ssims)),
        "mean_face_ms_ssim": float(np.mean(ms_ssim(np.repeat(mean_crop[None], len(test[:64]), 0), np.stack(
            [face_crop(np.asarray(cache.chips[i])) for i in test[:64]])))),
        "identity_accuracy": identity.accuracy,
        "identity_accuracy_original": original.accuracy,
        "identity_pairs": int(len(sel)),
        "identity_protocol": "folds 9-10 of pairs.txt; right image replaced by its reconstruction pasted into the mean train chip",
        "ms_per_face": ms_single,
        "ms_per_face_batched": t_rec / len(test) * 1000,
        "parameters": int(n_params),
        "memory_mb_fp32": n_params * 4 / 2**20,
    }


def grid(cache: FeatureCache, path: Path, n: int = 8, model: str | None = None) -> Path:
    """Originals over reconstructions (and the prediction head's output, when registered) for a
    fixed set of test faces (the paper's Fig. 3, first rows)."""
    from PIL import Image

    from facecodec import base_layer, reconstruction

    rec = reconstruction.load_reconstructor(model)
    codec = base_layer.get_codec("dlib-resnet-128")
    test = cache.split_rows("test")
    pick = test[:: len(test) // n][:n]
    top = [face_crop(np.asarray(cache.chips[i])) for i in pick]
    feats = [codec.decompress(codec.compress(cache.features[i])).feature[None] for i in pick]
    rows = [top, [rec(f)[0] for f in feats]]
    predictor = reconstruction.default_name("prediction")
    if model is None and predictor != rec.name:  # third row: the enhancement layer's prediction head
        head = reconstruction.load_reconstructor(predictor)
        rows.append([head(f)[0] for f in feats])
    canvas = np.concatenate([np.concatenate(r, 1) for r in rows], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path
