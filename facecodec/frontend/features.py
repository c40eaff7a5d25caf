"""Deep face feature backends, chosen by name (paper 3.1: the base layer is a deep feature).

Each backend owns its aligner, so "the crop the backend expects" is never guessed by callers.
Backends register in :data:`BACKENDS`; :func:`get_backend` builds one lazily and caches it.

- ``dlib-resnet-128`` (default): dlib's ResNet-29 metric-learning descriptor from
  ``face_recognition_models``; 128-D like the paper's FaceNet feature, fully offline.
- ``facenet-vggface2-512``: facenet-pytorch's InceptionResnetV1. Its weights cannot be
  downloaded here, so they are read from ``FACECODEC_FACENET_WEIGHTS``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from facecodec.errors import ModelFileMissingError
from facecodec.frontend.align import BoxAligner, DlibAligner
from facecodec.frontend.detect import Detection
from facecodec.settings import get_settings
from facecodec.zoo import package_data_file

log = logging.getLogger(__name__)


class FeatureBackend(Protocol):
    name: str
    code: int
    dim: int

    def align(self, image: np.ndarray, detection: Detection) -> np.ndarray: ...

    def embed(self, chips: list[np.ndarray]) -> np.ndarray: ...


class DlibResnet128:
    """dlib's face descriptor on 150x150 chips; Euclidean distance 0.6 is dlib's own threshold.

    ``engine="runtime"`` (default, ``FACECODEC_DLIB_ENGINE``) runs dlib's network converted to ONNX
    (the registered ``descriptor`` model, ``python -m train runtime-models``) by
    :mod:`facecodec.runtime`: the same features as dlib to about 1e-6 (model card), 3-4 ms a face on
    one core against about 95 ms for the BLAS-less ``dlib-bin`` wheel. ``"dlib"`` runs dlib itself
    (the reference the conversion is checked against).
    """

    name = "dlib-resnet-128"
    code = 1
    dim = 128

    def __init__(self, engine: str | None = None) -> None:
        self.aligner = DlibAligner()
        self.engine = engine or get_settings().dlib_engine
        if self.engine not in ("runtime", "dlib"):
            raise ValueError(f"unknown dlib engine {self.engine!r}; choose runtime or dlib")
        self._model = None
        self._network = None
        self._lock = threading.Lock()

    def _get(self):
        with self._lock:
            if self._model is None:
                import dlib

                path = package_data_file("face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat")
                self._model = dlib.face_recognition_model_v1(str(path))
            return self._model

    def network(self):
        """The converted network (the newest registered ``descriptor`` model of this backend), compiled once."""
        with self._lock:
            if self._network is None:
                from facecodec import zoo
                from facecodec.runtime import registered

                self._network = registered(zoo.newest("descriptor", self.name).name)
            return self._network

    def align(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        return self.aligner.align(image, detection)

    def embed_dlib(self, chips: list[np.ndarray]) -> np.ndarray:
        """Features computed by dlib itself."""
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        model = self._get()
        out = [np.asarray(model.compute_face_descriptor(np.ascontiguousarray(c)), np.float32) for c in chips]
        return np.stack(out)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        if self.engine == "dlib":
            return self.embed_dlib(chips)
        x = np.stack([np.ascontiguousarray(c, dtype=np.uint8) for c in chips])
        return self.network()(x)[0].astype(np.float32, copy=False)


class FacenetVggface2:
    """facenet-pytorch's InceptionResnetV1 trained on VGGFace2, 512-D, L2-normalised."""

    name = "facenet-vggface2-512"
    code = 2
    dim = 512

    def __init__(self, weights: Path | None = None) -> None:
        self.weights = weights
        self.aligner = BoxAligner(size=160, margin=0.2)
        self._model = None
        self._lock = threading.Lock()

    def _get(self):
        with self._lock:
            if self._model is None:
                import torch
                from facenet_pytorch import InceptionResnetV1

                path = self.weights or get_settings().facenet_weights
                if path is None or not Path(path).is_file():
                    raise ModelFileMissingError(
                        "the facenet-vggface2-512 backend needs InceptionResnetV1 VGGFace2 weights; "
                        f"set FACECODEC_FACENET_WEIGHTS to the state-dict file (now: {path})"
                    )
                model = InceptionResnetV1(pretrained=None, classify=False)
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = {k: v for k, v in state.items() if not k.startswith("logits.")}
                model.load_state_dict(state, strict=True)
                self._model = model.eval()
            return self._model

    def align(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        return self.aligner.align(image, detection)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        import torch

        if not chips:
            return np.zeros((0, self.dim), np.float32)
        x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()
        x = (x - 127.5) / 128.0
        with torch.inference_mode():
            return self._get()(x).numpy().astype(np.float32)


BACKENDS: dict[str, Callable[[], FeatureBackend]] = {
    DlibResnet128.name: DlibResnet128,
    FacenetVggface2.name: FacenetVggface2,
}
BACKEND_CODES: dict[int, str] = {DlibResnet128.code: DlibResnet128.name, FacenetVggface2.code: FacenetVggface2.name}


@lru_cache(maxsize=None)
def get_backend(name: str | None = None) -> FeatureBackend:
    """The backend called ``name`` (default from ``FACECODEC_FEATURE_BACKEND``), built once."""
    name = name or get_settings().feature_backend
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown feature backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    return factory()
