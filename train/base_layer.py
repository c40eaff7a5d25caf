"""Fit the base layer's transform and probability model on train-people features (paper 3.1).

Format 2 (the default, :func:`fit_discriminant`): an orthonormal basis that puts first what tells
people apart, the eigenvectors of ``S_t - lambda S_w`` (total and within-person scatter of the train
people), of which the first ``K`` are coded. ``lambda`` and ``K`` are chosen on pairs made from train
people only (:func:`train_pairs`), by verification accuracy at the ideal code lengths a 20-byte
payload leaves room for. Format 1 (:func:`fit`): PCA over all 128 dimensions.

Everything comes from the train people only; the distribution family (Gaussian or Laplace) is the
one whose real payloads are shorter on those features. The default step is chosen afterwards by
``python -m eval rate-accuracy --set-default``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math

import numpy as np

from facecodec.base_layer import BaseLayerCodec, BaseLayerModel

log = logging.getLogger(__name__)

# From near lossless to very coarse, for dlib's features (PCA scales 0.18 down to ~0 over 128 dims).
STEPS = np.array([0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08, 0.1, 0.14, 0.2])
# Format 2 codes fewer, more discriminative components: finer spacing where 15-20 byte payloads are.
STEPS_V2 = np.array([0.02, 0.025, 0.03, 0.035, 0.04, 0.045, 0.05, 0.055, 0.06, 0.065, 0.07, 0.08, 0.09, 0.1, 0.12, 0.15])
FAMILIES = ("gaussian", "laplace")  # the probability models tried; the one with the shorter real payloads is kept
LAMBDAS = (0.0, 0.5, 1.0, 1.5, 2.0)  # 0 is PCA
COMPONENTS = (32, 36, 40, 44, 48, 56, 64)
TARGET_BODY_BYTES = (13.0, 14.0, 15.0, 16.0)  # ideal body sizes scored: 20-byte payloads less header and coder
BACKEND = "dlib-resnet-128"


def mean_bytes(model: BaseLayerModel, feats: np.ndarray, step_index: int) -> float:
    codec = BaseLayerCodec(model, step_index)
    return float(np.mean([len(codec.compress(f)) for f in feats]))


def shortest(candidates, feats: np.ndarray, default_step: int) -> BaseLayerModel:
    """The candidate model whose real payloads are shortest at ``default_step`` on (a sample of) the
    train features, with that default step."""
    sample = np.asarray(feats)[:: max(1, len(feats) // 2000)]
    best = None
    for m in candidates:
        b = mean_bytes(m, sample, default_step)
        log.info("%s: %.2f bytes per face on train people at step %.3f", m.family, b, m.steps[default_step])
        if best is None or b < best[0]:
            best = (b, m)
    model = best[1]
    model.default_step = default_step
    return model


def fit(train_feats: np.ndarray, default_step: int = 7) -> BaseLayerModel:
    return shortest((BaseLayerModel.fit(train_feats, BACKEND, STEPS, family) for family in FAMILIES),
                    train_feats, default_step)


def scatter(features: np.ndarray, people: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, total scatter ``S_t`` and within-person scatter ``S_w`` (people with two images or more)."""
    x = np.asarray(features, np.float64)
    mean = x.mean(0)
    _, inv, count = np.unique(people, return_inverse=True, return_counts=True)
    centres = np.stack([np.bincount(inv, weights=x[:, j]) for j in range(x.shape[1])], 1) / count[:, None]
    several = count[inv] > 1
    within = x[several] - centres[inv[several]]
    sw = within.T @ within / (several.sum() - (count > 1).sum())
    return mean, np.cov(x - mean, rowvar=False), sw


def discriminant_basis(st: np.ndarray, sw: np.ndarray, lam: float) -> np.ndarray:
    """Rows: the eigenvectors of ``S_t - lam S_w``, largest eigenvalue first (orthonormal; lam = 0 is PCA)."""
    evals, evecs = np.linalg.eigh(st - lam * sw)
    return evecs[:, np.argsort(evals)[::-1]].T


def train_pairs(people: np.ndarray, per_person: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verification pairs among train people (rows of ``people``): up to ``per_person`` matched pairs of
    each person with several images, and as many mismatched pairs drawn at random."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[int]] = {}
    for i, p in enumerate(people):
        rows.setdefault(p, []).append(i)
    left, right = [], []
    for r in rows.values():
        cand = [(a, b) for k, a in enumerate(r) for b in r[k + 1 :]]
        for k in rng.permutation(len(cand))[:per_person]:
            left.append(cand[k][0])
            right.append(cand[k][1])
    n = len(left)
    a, b = rng.integers(len(people), size=4 * n), rng.integers(len(people), size=4 * n)
    keep = people[a] != people[b]
    left += a[keep][:n].tolist()
    right += b[keep][:n].tolist()
    return np.array(left), np.array(right), np.r_[np.ones(n, bool), np.zeros(n, bool)]


def _pair_accuracy(feats: np.ndarray, pairs) -> float:
    from facecodec.verification import best_threshold, pair_distances

    left, right, same = pairs
    d = pair_distances(feats[left], feats[right])
    return float(np.mean((d <= best_threshold(d, same)) == same))


def _ideal_bits(y: np.ndarray, sigma: np.ndarray, step: float) -> float:
    """Mean ideal code length (bits) of ``round(y / step)`` under discretized Gaussians of ``sigma``."""
    from scipy.stats import norm

    q = np.rint(y / step)
    z = sigma / step
    p = norm.cdf((q + 0.5) / z) - norm.cdf((q - 0.5) / z)
    return float(-np.log2(np.maximum(p, 2.0**-16)).sum(1).mean())


def choose_transform(features: np.ndarray, people: np.ndarray, lambdas=LAMBDAS, components=COMPONENTS,
                     targets=TARGET_BODY_BYTES) -> tuple[float, int, list[dict]]:
    """``(lambda, K)`` with the best mean verification accuracy on train pairs at the ideal body sizes
    ``targets`` (bytes, interpolated along a step sweep); and every configuration's scores."""
    mean, st, sw = scatter(features, people)
    pairs = train_pairs(people)
    x = np.asarray(features, np.float64) - mean
    sweep = np.geomspace(0.03, 0.2, 20)
    table = []
    for lam in lambdas:
        basis = discriminant_basis(st, sw, lam)
        for k in components:
            y = x @ basis[:k].T
            sigma = y.std(0)
            points = []
            for step in sweep:
                dec = mean + (np.rint(y / step) * step) @ basis[:k]
                points.append((_ideal_bits(y, sigma, step) / 8, _pair_accuracy(dec, pairs)))
            rate, acc = np.array(points).T
            order = np.argsort(rate)
            at = [float(np.interp(t, rate[order], acc[order])) for t in targets]
            table.append({"lambda": lam, "components": k, "accuracy_at_targets": at, "score": float(np.mean(at))})
            log.info("lambda %.1f, %d components: train-pair accuracy %s at %s ideal body bytes", lam, k,
                     " ".join(f"{a:.4f}" for a in at), targets)
    best = max(table, key=lambda r: r["score"])
    return best["lambda"], best["components"], table


def fit_discriminant(features: np.ndarray, people: np.ndarray, default_step: int = 6,
                     lam: float | None = None, components: int | None = None) -> BaseLayerModel:
    """Format 2: the discriminant basis (``lam`` and ``components`` chosen on train pairs unless given),
    per-component scales and the family whose real payloads are shorter on train people."""
    about = ""
    if lam is None or components is None:
        lam, components, table = choose_transform(features, people)
        about = f"lambda {lam} and {components} components chosen on train pairs among {len(table)} configurations"
    mean, st, sw = scatter(features, people)
    basis = discriminant_basis(st, sw, lam)
    y = (np.asarray(features, np.float64) - mean) @ basis.T
    def candidate(family: str) -> BaseLayerModel:
        sigma = y.std(0) if family == "gaussian" else np.abs(y).mean(0) * math.sqrt(2)
        return BaseLayerModel("unsaved", BACKEND, mean, basis, np.maximum(sigma, 1e-6), STEPS_V2, family, fmt=2,
                              components=components, about=f"S_t - {lam} S_w, first {components} components; {about}")

    return shortest((candidate(family) for family in FAMILIES), features, default_step)


def register(model: BaseLayerModel, tag: int | None = None) -> str:
    """Save (with its integer tables) into the package's model folder and the manifest; returns the
    model name. A new format-1 model's tag is the first byte of its hash unless that is taken; a
    format-2 model's is one above every base-layer tag (the newest tag is the default model)."""
    from facecodec import zoo

    buf = io.BytesIO()
    model.save(buf)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    if tag is None:
        tags = [e.tag or 0 for e in zoo.entries("base-layer") if e.backend == model.backend]
        tag = int(digest[:2], 16) if model.format == 1 else max(tags, default=0) + 1
    if not 0 < tag < 256:
        raise RuntimeError(f"no free one-byte tag above {tag - 1} for a base-layer model of {model.backend}")
    prefix = f"base-dlib128-pca-{model.family}" if model.format == 1 else \
        f"base-dlib128-disc{model.components}-{model.family}"
    name = zoo.add(buf.getvalue(), prefix, ".npz", "base-layer", "base-layer.md", preferred_tag=tag,
                   backend=model.backend, default_step=model.default_step).name
    return name


def ship_tables(name: str) -> str:
    """Re-register a model written before its integer tables were shipped, with its tables and under
    its tag (the tables are those its payloads were coded with: they decode as before); the old file
    and entry go. Returns the new name."""
    from facecodec import base_layer, zoo

    old = zoo.entry(name)
    model = base_layer.BaseLayerModel.from_file(zoo.model_path(name), name, old.tag, old.default_step or 0)
    for k in range(len(model.steps)):
        model.tables(k)  # computed from the floats, as the encoders that wrote its payloads did
    zoo.unregister(name)
    new = register(model, tag=old.tag)
    if zoo.entry(new).tag != old.tag:
        raise RuntimeError(f"{new} got tag {zoo.entry(new).tag}, not {old.tag}")
    (zoo.PACKAGE_MODEL_DIR / old.file).unlink()
    base_layer.load_model.cache_clear()
    return new


def set_default_step(name: str, step_index: int) -> None:
    """Make ``step_index`` the default operating point of ``name`` (a manifest field, not the file)."""
    from dataclasses import replace

    from facecodec import base_layer, zoo

    zoo.register(replace(zoo.entry(name), default_step=step_index))
    base_layer.load_model.cache_clear()
    base_layer.get_codec.cache_clear()


def main(args) -> None:
    from train.data import load

    cache = load(args.cache)
    rows = cache.split_rows("train")
    if args.format == 1:
        model = fit(cache.features[rows], 7 if args.default_step is None else args.default_step)
    else:
        people = np.array([cache.names[i].split("/")[0] for i in rows])
        model = fit_discriminant(cache.features[rows], people, 6 if args.default_step is None else args.default_step)
    print(register(model))
