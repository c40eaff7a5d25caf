"""Fit the base layer's transform and probability model on train-people features (paper 3.1).

The PCA basis and per-dimension scales come from the train people only; the distribution
family (Gaussian or Laplace) is the one whose real payloads are shorter on those features.
The default step is chosen afterwards by ``python -m eval rate-accuracy --set-default``.
"""

from __future__ import annotations

import hashlib
import io
import logging

import numpy as np

from facecodec.base_layer import BaseLayerCodec, BaseLayerModel

log = logging.getLogger(__name__)

# From near lossless to very coarse, for dlib's features (PCA scales 0.18 down to ~0 over 128 dims).
STEPS = np.array([0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08, 0.1, 0.14, 0.2])
BACKEND = "dlib-resnet-128"


def mean_bytes(model: BaseLayerModel, feats: np.ndarray, step_index: int) -> float:
    codec = BaseLayerCodec(model, step_index)
    return float(np.mean([len(codec.compress(f)) for f in feats]))


def fit(train_feats: np.ndarray, default_step: int = 7) -> BaseLayerModel:
    sample = train_feats[:: max(1, len(train_feats) // 2000)]
    best = None
    for family in ("gaussian", "laplace"):
        m = BaseLayerModel.fit(train_feats, BACKEND, STEPS, family)
        b = mean_bytes(m, sample, default_step)
        log.info("%s: %.2f bytes per face on train people at step %.3f", family, b, STEPS[default_step])
        if best is None or b < best[0]:
            best = (b, m)
    model = best[1]
    model.default_step = default_step
    return model


def register(model: BaseLayerModel, tag: int | None = None) -> str:
    """Save (with its integer tables) into the package's model folder and the manifest; returns the
    model name. A new model's tag is the first byte of its hash unless that is taken."""
    from facecodec import zoo

    buf = io.BytesIO()
    model.save(buf)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    name = zoo.add(buf.getvalue(), f"base-dlib128-pca-{model.family}", ".npz", "base-layer", "base-layer.md",
                   preferred_tag=tag or int(digest[:2], 16), backend=model.backend,
                   default_step=model.default_step).name
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
    model = fit(cache.features[rows], args.default_step)
    print(register(model))
