"""LFW deep-funneled: image lists, the person-disjoint splits and the View 2 pairs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "lfw"


def lfw_root() -> Path:
    """``LFW_ROOT`` or ``../shared/datasets/lfw`` beside the checkout."""
    root = Path(os.environ.get("LFW_ROOT", DEFAULT_ROOT))
    if not (root / "pairs.txt").is_file():
        raise FileNotFoundError(f"LFW not found at {root}; set LFW_ROOT to the folder holding pairs.txt")
    return root


def image_name(person: str, index: int) -> str:
    """The relative path of image ``index`` (1-based) of ``person``."""
    return f"{person}/{person}_{index:04d}.jpg"


def all_images(root: Path) -> list[str]:
    base = root / "lfw-deepfunneled"
    return sorted(str(p.relative_to(base)) for p in base.glob("*/*.jpg"))


def people(root: Path, split: str) -> set[str]:
    """``train`` or ``test`` people (person-disjoint)."""
    lines = (root / "splits" / f"{split}_people.txt").read_text().split("\n")
    return {ln.split()[0] for ln in lines if ln.strip()}


@dataclass(frozen=True)
class Pairs:
    """View 2: ``left[i]``, ``right[i]`` image names, ``same[i]``, ``fold[i]`` in 0..9."""

    left: list[str]
    right: list[str]
    same: np.ndarray
    fold: np.ndarray


def read_pairs(root: Path) -> Pairs:
    lines = (root / "pairs.txt").read_text().strip().split("\n")
    n_folds, n = (int(v) for v in lines[0].split())
    left, right, same, fold = [], [], [], []
    for i, line in enumerate(lines[1:]):
        f = i // (2 * n)
        parts = line.split()
        if len(parts) == 3:
            left.append(image_name(parts[0], int(parts[1])))
            right.append(image_name(parts[0], int(parts[2])))
            same.append(True)
        else:
            left.append(image_name(parts[0], int(parts[1])))
            right.append(image_name(parts[2], int(parts[3])))
            same.append(False)
        fold.append(f)
    assert len(left) == n_folds * 2 * n
    return Pairs(left, right, np.array(same), np.array(fold))
