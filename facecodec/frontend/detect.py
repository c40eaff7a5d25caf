"""Face detection with facenet-pytorch's MTCNN: boxes, probabilities and 5 landmarks.

The MTCNN weights ship inside the ``facenet-pytorch`` package, so detection works offline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from facecodec.errors import ImageError


@dataclass(frozen=True)
class Quality:
    """What the edge uses to pick the best observation of a track."""

    probability: float
    face_size: float
    fallback: bool = False

    @property
    def score(self) -> float:
        """Larger is better: confident detections of large faces."""
        return float(self.probability) * min(self.face_size, 160.0)


@dataclass(frozen=True)
class Detection:
    """One face in an image. ``box`` is (x1, y1, x2, y2) in pixels; ``landmarks`` is 5x2
    (left eye, right eye, nose, left mouth corner, right mouth corner) as MTCNN orders them."""

    box: tuple[float, float, float, float]
    probability: float
    landmarks: np.ndarray = field(repr=False)
    fallback: bool = False

    @property
    def quality(self) -> Quality:
        x1, y1, x2, y2 = self.box
        return Quality(self.probability, float(min(x2 - x1, y2 - y1)), self.fallback)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 HxWx3 image (the only layout the front end takes)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an RGB image of shape HxWx3, got {getattr(image, 'shape', type(image))}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}")
    if min(image.shape[:2]) < 16:
        raise ImageError(f"image of {image.shape[1]}x{image.shape[0]} pixels is too small for a face")
    return np.ascontiguousarray(image)


class MtcnnDetector:
    """MTCNN (Zhang et al. 2016) from facenet-pytorch, loaded on first use."""

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float | None = None):
        """``factor``: the image pyramid's scale step (default ``FACECODEC_MTCNN_FACTOR``, 0.709)."""
        from facecodec.settings import get_settings

        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.factor = factor or get_settings().mtcnn_factor
        self._model = None
        self._lock = threading.Lock()

    def _get(self):
        with self._lock:
            if self._model is None:
                from facenet_pytorch import MTCNN

                self._model = MTCNN(
                    min_face_size=self.min_face_size,
                    thresholds=list(self.thresholds),
                    factor=self.factor,
                    keep_all=True,
                    post_process=False,
                    device="cpu",
                )
            return self._model

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in ``image``, most probable first."""
        import torch

        image = check_image(image)
        if min(image.shape[:2]) < self.min_face_size:  # MTCNN's pyramid would be empty (it raises)
            return []
        with torch.inference_mode():
            boxes, probs, points = self._get().detect(image, landmarks=True)
        if boxes is None:
            return []
        found = [
            Detection(tuple(float(v) for v in b), float(p), np.asarray(pt, dtype=np.float32))
            for b, p, pt in zip(boxes, probs, points)
        ]
        return sorted(found, key=lambda d: -d.probability)


def center_fallback(image: np.ndarray, fraction: float = 0.44) -> Detection:
    """A box in the middle of the image, for pre-cropped faces where MTCNN finds nothing.

    LFW's deep-funneled images centre the labelled face, with a face about 0.44 of the
    image side wide; the landmarks are the template positions inside that box.
    """
    h, w = image.shape[:2]
    side = fraction * min(h, w)
    cx, cy = w / 2.0, h / 2.0
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    rel = np.array([[0.31, 0.40], [0.69, 0.40], [0.50, 0.58], [0.35, 0.78], [0.65, 0.78]], np.float32)
    landmarks = np.array([box[0], box[1]], np.float32) + rel * side
    return Detection(box, 0.0, landmarks, fallback=True)


def pick_central(detections: list[Detection], image_shape: tuple[int, ...]) -> Detection | None:
    """The detection a pre-cropped photo is about: confident, large and near the centre."""
    if not detections:
        return None
    h, w = image_shape[:2]

    def score(d: Detection) -> float:
        x1, y1, x2, y2 = d.box
        dist = np.hypot((x1 + x2) / 2 - w / 2, (y1 + y2) / 2 - h / 2) / max(h, w)
        return d.probability * (x2 - x1) * (1.0 - dist) ** 2

    return max(detections, key=score)
