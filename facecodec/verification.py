"""Face verification on pairs: the LFW protocol (10 folds, threshold chosen on 9, tested on 1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pair_distances(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Euclidean distance between rows (dlib's metric; smaller = same person)."""
    return np.linalg.norm(np.asarray(left, np.float64) - np.asarray(right, np.float64), axis=1)


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (midpoints between sorted distances)."""
    order = np.argsort(dist)
    d, s = dist[order], same[order].astype(np.int64)
    # accept pairs with distance <= t: correct = same below t + different above t
    same_below = np.cumsum(s)
    diff_above = (len(s) - s.sum()) - np.cumsum(1 - s)
    correct = same_below + diff_above
    i = int(np.argmax(correct))
    return float((d[i] + d[i + 1]) / 2) if i + 1 < len(d) else float(d[i] + 1e-6)


@dataclass(frozen=True)
class VerificationResult:
    accuracy: float
    std: float
    thresholds: list[float]
    fold_accuracy: list[float]


def ten_fold_accuracy(dist: np.ndarray, same: np.ndarray, fold: np.ndarray) -> VerificationResult:
    """Mean accuracy over folds; each fold's threshold is fitted on the other folds."""
    accs, thresholds = [], []
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        t = best_threshold(dist[train], same[train])
        thresholds.append(t)
        accs.append(float(np.mean((dist[test] <= t) == same[test])))
    return VerificationResult(float(np.mean(accs)), float(np.std(accs)), thresholds, accs)


def rates_at(dist: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-accept rate, false-reject rate) of ``dist <= threshold``."""
    accept = dist <= threshold
    far = float(np.mean(accept[~same])) if (~same).any() else 0.0
    frr = float(np.mean(~accept[same])) if same.any() else 0.0
    return far, frr
