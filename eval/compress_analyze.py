"""Compress-then-analyze anchors for ``rate-accuracy`` (paper Fig. 2's JPEG / JPEG 2000 curves).

The aligned 150x150 chip (what dlib's descriptor reads) is compressed with a conventional codec,
decoded, and the feature is extracted from the decoded chip. dlib takes 20-100 ms per chip,
so the anchors use a fixed, balanced subset of pairs.txt: the first ``per_fold`` pairs of each
fold (half matched, half mismatched), all 10 folds. Bytes per face are averaged per person over the
test people's images in that subset (folds 9-10), beside the plain mean over those images.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp

import numpy as np
from tqdm import tqdm

from eval.lfw import Pairs

_dlib = None


def _init() -> None:
    global _dlib
    import torch

    from facecodec.frontend.features import DlibResnet128

    torch.set_num_threads(1)
    _dlib = DlibResnet128()


def _features(job: tuple[np.ndarray, list[tuple[str, int]]]) -> list[tuple[int, np.ndarray | None]]:
    """(bytes, feature) of one chip for every (codec, quality); feature None when coding failed."""
    from facecodec.image_codecs import image_codec

    chip, points = job
    out = []
    for name, q in points:
        try:
            c = image_codec(name)
            data = c.encode(chip, q)
            dec = c.decode(data, chip.shape[:2])
            out.append((len(data), _dlib.embed([dec])[0]))
        except Exception:
            out.append((0, None))
    return out


def _cached_features(cache, names: list[str], points: list[tuple[str, int]], workers: int) -> list[list]:
    """(bytes, feature) per image and point; computed once and kept in ``<cache>/anchors/``."""
    folder = cache.root / "anchors"
    folder.mkdir(exist_ok=True)
    key = folder / f"{hashlib.sha256(repr((names, points)).encode()).hexdigest()[:16]}.npz"
    if key.exists():
        with np.load(key) as z:
            sizes, feats, ok = z["sizes"], z["features"], z["ok"]
        return [[(int(sizes[i, k]), feats[i, k] if ok[i, k] else None) for k in range(len(points))] for i in range(len(names))]
    jobs = [(np.asarray(cache.chips[cache.index[n]]), points) for n in names]
    results = []
    with mp.get_context("spawn").Pool(workers, initializer=_init) as pool:
        for r in tqdm(pool.imap(_features, jobs, chunksize=2), total=len(jobs), desc="compress-then-analyze"):
            results.append(r)
    sizes = np.array([[b for b, _ in r] for r in results], np.int32)
    ok = np.array([[f is not None for _, f in r] for r in results])
    feats = np.array([[f if f is not None else np.zeros(128, np.float32) for _, f in r] for r in results], np.float32)
    np.savez(key, sizes=sizes, features=feats, ok=ok)
    return results


def subset(pairs: Pairs, per_fold: int) -> np.ndarray:
    """Indexes of the first per_fold/2 matched and per_fold/2 mismatched pairs of every fold."""
    pick = []
    for f in range(10):
        for same in (True, False):
            idx = np.flatnonzero((pairs.fold == f) & (pairs.same == same))
            pick.extend(idx[: per_fold // 2].tolist())
    return np.array(sorted(pick))


def curves(cache, pairs: Pairs, codecs: dict[str, tuple[int, ...]], per_fold: int, test_people: set[str],
           workers: int = 2) -> tuple[dict[str, list[dict]], dict]:
    from facecodec.verification import pair_distances, ten_fold_accuracy

    sel = subset(pairs, per_fold)
    left = [pairs.left[k] for k in sel]
    right = [pairs.right[k] for k in sel]
    names = sorted(set(left) | set(right))
    points = [(c, q) for c, qs in codecs.items() for q in qs]
    results = _cached_features(cache, names, points, workers)
    pos = {n: i for i, n in enumerate(names)}
    li, ri = np.array([pos[n] for n in left]), np.array([pos[n] for n in right])
    is_test = np.array([n.split("/")[0] in test_people for n in names])
    same, fold = pairs.same[sel], pairs.fold[sel]
    out: dict[str, list[dict]] = {}
    for k, (codec, q) in enumerate(points):
        sizes = np.array([r[k][0] for r in results], np.float64)
        failed = [r[k][1] is None for r in results]
        feats = np.stack([r[k][1] if r[k][1] is not None else np.full(128, 1e3, np.float32) for r in results])
        d = pair_distances(feats[li], feats[ri])
        acc = ten_fold_accuracy(d, same, fold).accuracy
        people = [n.split("/")[0] for n, t in zip(names, is_test) if t]
        per_person = {}
        for who, b in zip(people, sizes[is_test]):
            per_person.setdefault(who, []).append(b)
        out.setdefault(codec, []).append({"param": q, "bytes": float(np.mean([np.mean(v) for v in per_person.values()])),
                                          "bytes_per_image": float(sizes[is_test].mean()), "accuracy": acc,
                                          "failures": int(np.sum(failed))})
    # the same subset with float features, so the anchors can be compared with the full-set figures
    d = pair_distances(cache.features[cache.rows(left)], cache.features[cache.rows(right)])
    meta = {"pairs": int(len(sel)), "pairs_per_fold": per_fold, "images": len(names),
            "test_images": int(is_test.sum()), "float_accuracy_on_subset": ten_fold_accuracy(d, same, fold).accuracy,
            "what_is_coded": "dlib's 150x150 aligned chip; feature extracted from the decoded chip",
            "failed_points": "a failure (no decodable file) makes that face's feature useless (distance > threshold)"}
    return out, meta
