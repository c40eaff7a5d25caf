"""Decoder-side restoration of the enhancement layer, conditioned on the base layer (beyond the paper).

After the image decoder, a small convolutional network (:class:`train.networks.Restorer`) takes the
decoded face, the prediction ``x_fea`` that the base layer's feature gives (the reconstruction's
prediction head), the quality and the coding mode, and returns the face with part of the codec's
error removed: what the feature knows about the person sharpens what the image codec blurred. It is
trained per image codec on train people (``python -m train restoration``) and shipped as a zip of an
ONNX network (run by :mod:`facecodec.runtime`, no PyTorch) and ``config.json``, which names the codec
and the predictor it was trained with; the registry entry's ``head`` is the codec too. An
enhancement payload names the restoration by its registry tag (format 3), so the server runs exactly
the network the encoder chose. Model card: ``facecodec/models/restoration.md``.
"""

from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from facecodec.errors import UnknownModelError

KIND = "restoration"
PLANES = 8  # decoded face (3), prediction (3), quality / 100, mode (1 = direct)


@dataclass
class Restoration:
    """A registered restoration network: ``restoration(face, prediction, quality, mode)`` gives the restored face."""

    name: str
    tag: int
    codec: str
    predictor_tag: int
    network: object
    lock: threading.Lock

    def __call__(self, face: np.ndarray, prediction: np.ndarray, quality: int, mode: str) -> np.ndarray:
        x = np.empty((1, PLANES, *face.shape[:2]), np.float32)
        x[0, :3] = face.transpose(2, 0, 1) / np.float32(255)
        x[0, 3:6] = np.clip(prediction, 0, 255).transpose(2, 0, 1) / np.float32(255)
        x[0, 6] = quality / 100.0
        x[0, 7] = 1.0 if mode == "direct" else 0.0
        with self.lock:
            y = self.network(x)[0][0]
        return np.clip(np.rint(y.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


def for_codec(codec: str) -> Restoration | None:
    """The newest restoration network registered for ``codec`` whose predictor is registered, or None."""
    from facecodec import reconstruction, zoo

    found = sorted((e for e in zoo.entries(KIND) if e.head == codec), key=lambda e: e.tag or 0)
    predictors = {e.tag for e in zoo.entries(reconstruction.KIND)}
    for e in reversed(found):
        r = _load(e.name)
        if r.predictor_tag in predictors:
            return r
    return None


def by_tag(tag: int) -> Restoration:
    """The restoration network registered with ``tag`` (what a payload names)."""
    from facecodec import zoo

    for e in zoo.entries(KIND):
        if e.tag == tag:
            return _load(e.name)
    raise UnknownModelError(f"enhancement layer restored by network tag {tag}, which is not registered")


@lru_cache(maxsize=None)
def _load(name: str) -> Restoration:
    from facecodec import runtime, zoo

    e = zoo.entry(name)
    with zipfile.ZipFile(zoo.model_path(name)) as z:
        config = json.loads(z.read("config.json"))
    return Restoration(name, e.tag or 0, config["codec"], int(config["predictor_tag"]),
                       runtime.registered(name, "restoration"), threading.Lock())


def clear_cache() -> None:
    """Forget loaded networks (after the registry changed)."""
    _load.cache_clear()
