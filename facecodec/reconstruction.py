"""Deep feature reconstruction: the face rebuilt from the base layer (paper 3.2), at run time.

Two heads: the face an operator sees (``display``) and the prediction that leaves the smallest
residual for the enhancement layer (``prediction``). Each model is registered with the heads it serves
(:meth:`facecodec.zoo.ModelEntry.serves`); :func:`default_name` picks the newest of a head
(:func:`facecodec.zoo.newest`), and the prediction head falls back to the display model when none is
registered. Today one model serves both: a ridge regression from the feature to the pixels (the
MSE-optimal linear map, a matrix product in numpy), which beats the de-convolutional display network
of :mod:`train.networks` (run as ONNX by :mod:`facecodec.runtime`, still registered for the payloads
that name it) on every figure of ``eval/results/reconstruction.json``, dlib's identity verdicts
included. Neither needs PyTorch: the training commands write PyTorch files, which
``python -m train runtime-models`` converts before they are registered for the services.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache

import numpy as np

from facecodec.crop import CROP
from facecodec.errors import UnknownModelError

KIND = "reconstruction"
HEADS = ("display", "prediction")


def _to_image(t: np.ndarray) -> np.ndarray:
    """Output in [-1, 1] (N,3,H,W) to uint8 images (N,H,W,3), rounded as the training code rounds."""
    x = np.rint((np.clip(t.astype(np.float32), -1, 1) + 1) * np.float32(127.5)).astype(np.uint8)
    return x.transpose(0, 2, 3, 1)


class LinearHead:
    """The ridge prediction head: ``pixels = W (f - mean) / std + b`` (float32, like the PyTorch layer)."""

    def __init__(self, feat_mean: np.ndarray, feat_std: np.ndarray, weight: np.ndarray, bias: np.ndarray):
        self.feat_mean = feat_mean.astype(np.float32)
        self.feat_std = feat_std.astype(np.float32)
        self.weight_t = np.ascontiguousarray(weight.astype(np.float32).T)  # (dim, 3*CROP*CROP)
        self.bias = bias.astype(np.float32)
        self.dim = len(self.feat_mean)

    @classmethod
    def from_arrays(cls, arrays: dict) -> LinearHead:
        return cls(arrays["feat_mean"], arrays["feat_std"], arrays["map_weight"], arrays["map_bias"])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(np.asarray(features, np.float32)) - self.feat_mean) / self.feat_std
        y = (z @ self.weight_t + self.bias).reshape(-1, CROP, CROP, 3).transpose(0, 3, 1, 2)
        return _to_image(y / np.float32(127.5) - np.float32(1))


class NetworkHead:
    """The display network, converted to ONNX: decoded features (N, dim) -> faces."""

    def __init__(self, network):
        self.network = network

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return _to_image(self.network(np.atleast_2d(np.asarray(features, np.float32)))[0])


class Reconstructor:
    """A registered reconstruction model, ready for inference on decoded features: ``rec(features)``
    gives uint8 faces (N, 112, 112, 3)."""

    def __init__(self, name: str, head) -> None:
        self.name = name
        self.head = head
        self._lock = threading.Lock()

    def __call__(self, features: np.ndarray) -> np.ndarray:
        with self._lock:
            return self.head(features)


def default_name(head: str = "display") -> str:
    """The newest registered reconstruction model of ``head``; the ``prediction`` head falls back to
    the display model."""
    from facecodec import zoo

    if head not in HEADS:
        raise UnknownModelError(f"unknown reconstruction head {head!r} ({', '.join(HEADS)})")
    try:
        return zoo.newest(KIND, head=head).name
    except UnknownModelError:
        if head == "prediction":
            return default_name("display")
        raise UnknownModelError("no reconstruction model is registered; train one with `python -m train reconstruction`"
                                " and convert it with `python -m train runtime-models`") from None


def load_reconstructor(name: str | None = None) -> Reconstructor:
    """A registered reconstruction model (the default one, :func:`default_name`, when None)."""
    return _load(name or default_name())


@lru_cache(maxsize=None)
def _load(name: str) -> Reconstructor:
    from facecodec import zoo

    e = zoo.entry(name)
    if e.kind != KIND:
        raise UnknownModelError(f"{name!r} is a {e.kind} model, not a reconstruction model")
    path = zoo.model_path(name)
    if path.suffix == ".npz":
        with np.load(path) as z:
            config = json.loads(str(z["config"]))
            if config.get("type") != "linear":
                raise UnknownModelError(f"{name!r}: an .npz reconstruction model is a linear head, not {config}")
            return Reconstructor(name, LinearHead.from_arrays(dict(z)))
    if path.suffix == ".onnx":
        from facecodec.runtime import Network

        return Reconstructor(name, NetworkHead(Network(path.read_bytes(), name)))
    raise UnknownModelError(f"{name!r}: {path.suffix} files are not run by the services; convert it with "
                            "`python -m train runtime-models`")


def clear_cache() -> None:
    """Forget loaded models (after the registry changed)."""
    _load.cache_clear()


def reconstruct(base_payload: bytes) -> np.ndarray:
    """The 112x112 face rebuilt from a base-layer payload alone."""
    from facecodec import base_layer

    decoded = base_layer.decode(base_payload)
    return load_reconstructor()(decoded.feature)[0]
