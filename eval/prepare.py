"""``prepare``: detect, align and extract features for every LFW image once, cached on disk.

The cache holds, in image order: ``names.txt``, ``features.npy`` (N x D float32),
``chips.npy`` (N x 150 x 150 x 3 uint8, dlib's aligned chip) and ``quality.npy``
(probability, face size, fallback flag). Work is done in shards that are saved as they finish,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.lfw import all_images, lfw_root, people

log = logging.getLogger(__name__)
SHARD = 200


def default_cache() -> Path:
    return Path(os.environ.get("FACECODEC_EVAL_CACHE", Path(__file__).parent / "cache"))


_frontend = None


def _init_worker() -> None:
    global _frontend
    from facecodec.frontend import FaceFrontEnd

    _frontend = FaceFrontEnd("dlib-resnet-128")


def _process_shard(args: tuple[Path, list[str], Path]) -> Path:
    base, names, out = args
    from facecodec.images import load_rgb

    feats, chips, quality = [], [], []
    for name in names:
        face = _frontend.analyze_main(load_rgb(base / name), fallback=True)
        q = face.quality
        feats.append(face.feature)
        chips.append(face.chip)
        quality.append((q.probability, q.face_size, float(q.fallback)))
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, features=np.stack(feats), chips=np.stack(chips), quality=np.array(quality, np.float32))
    tmp.rename(out)
    return out


def prepare(root: Path, cache: Path, workers: int = 2, limit: int | None = None) -> Path:
    """Fill ``cache`` for the images of ``root`` (first ``limit`` only when given)."""
    names = all_images(root)
    if limit:
        names = names[:limit]
    cache.mkdir(parents=True, exist_ok=True)
    shard_dir = cache / "shards"
    shard_dir.mkdir(exist_ok=True)
    jobs = []
    for s in range(0, len(names), SHARD):
        out = shard_dir / f"{s:06d}_{len(names[s:s + SHARD])}.npz"
        if not out.exists():
            jobs.append((root / "lfw-deepfunneled", names[s : s + SHARD], out))
    log.info("%d images, %d shards to do", len(names), len(jobs))
    if jobs:
        # spawned, not forked: a fork of a process whose runtime already started its threads deadlocks
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for _ in tqdm(pool.map(_process_shard, jobs), total=len(jobs), desc="prepare (shards)"):
                pass
    parts = [np.load(shard_dir / f"{s:06d}_{len(names[s:s + SHARD])}.npz") for s in range(0, len(names), SHARD)]
    np.save(cache / "features.npy", np.concatenate([p["features"] for p in parts]))
    np.save(cache / "quality.npy", np.concatenate([p["quality"] for p in parts]))
    chips = np.lib.format.open_memmap(cache / "chips.npy", "w+", np.uint8, (len(names), 150, 150, 3))
    i = 0
    for p in parts:
        c = p["chips"]
        chips[i : i + len(c)] = c
        i += len(c)
    chips.flush()
    (cache / "names.txt").write_text("\n".join(names) + "\n")
    return cache


class FeatureCache:
    """Read access to a prepared cache, by image name."""

    def __init__(self, cache: Path):
        if not (cache / "names.txt").is_file():
            raise FileNotFoundError(f"no prepared LFW cache in {cache}; run `python -m eval prepare` first")
        self.root = cache
        self.names = (cache / "names.txt").read_text().split()
        self.index = {n: i for i, n in enumerate(self.names)}
        self.features = np.load(cache / "features.npy")
        self.quality = np.load(cache / "quality.npy")
        self.chips = np.load(cache / "chips.npy", mmap_mode="r")

    def split_rows(self, split: str) -> np.ndarray:
        """Row indexes of the images of ``train`` or ``test`` people (person-disjoint splits)."""
        who = people(lfw_root(), split)
        return np.array([i for i, n in enumerate(self.names) if n.split("/")[0] in who])

    def rows(self, names: list[str]) -> np.ndarray:
        return np.array([self.index[n] for n in names])
