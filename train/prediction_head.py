"""Fit the reconstruction's prediction head: ridge regression from the decoded feature to the crop.

The enhancement layer codes ``x - x_fea`` (paper 3.3), so the predictor that helps it most is
the one with the smallest squared error, not the one that looks most like a face. Among linear
maps that is ridge regression, fitted in closed form on the train people (features after a
base-layer round trip at the default step, as the server holds them). Measured here (see the
model card): random Fourier features of the feature did not beat the linear map, and the
de-convolutional display network, trained for structure, leaves larger residuals than the mean
face.
"""

from __future__ import annotations

import logging

import numpy as np

from facecodec.crop import CROP

log = logging.getLogger(__name__)


def fit(features: np.ndarray, crops: np.ndarray, alpha: float) -> dict:
    """Closed-form ridge on standardised features; returns the head's float32 tensors."""
    f_mean, f_std = features.mean(0), features.std(0) + 1e-6
    z = ((features - f_mean) / f_std).astype(np.float64)
    y = crops.reshape(len(crops), -1).astype(np.float64)
    y_mean = y.mean(0)
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y_mean))
    # the head's layout is HWC-flattened pixels -> stored as nn.Linear(dim, 3*112*112)
    return {"feat_mean": f_mean.astype(np.float32), "feat_std": f_std.astype(np.float32),
            "map.weight": w.T.astype(np.float32), "map.bias": y_mean.astype(np.float32)}


def export(tensors: dict, dim: int = 128) -> str:
    """Register the head as the services run it (``.npz``, :func:`train.convert.reconstruction_file`)."""
    import torch

    from facecodec import zoo
    from train.convert import reconstruction_file
    from train.networks import LinearFace

    net = LinearFace(dim)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    data, suffix, _ = reconstruction_file(net, {"type": "linear", "dim": dim})
    return zoo.add(data, f"recon-ridge{dim}", suffix, "reconstruction", "{name}.md",
                   backend="dlib-resnet-128", head="prediction").name


def main(args) -> None:
    from train.data import decoded_features, load
    from train.reconstruction import crops_of

    cache = load(args.cache)
    rows = cache.split_rows("train")
    feats = decoded_features(cache.features[rows])
    crops = crops_of(cache.chips, rows)
    assert crops.shape[1:] == (CROP, CROP, 3)
    log.info("fitting ridge (alpha %g) on %d train images", args.alpha, len(rows))
    print(export(fit(feats, crops, args.alpha)))
