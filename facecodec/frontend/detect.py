"""Face detection with MTCNN: boxes, probabilities and 5 landmarks.

The cascade is :mod:`facecodec.frontend.mtcnn` (numpy) around facenet-pytorch's MTCNN weights,
converted to ONNX and registered as the ``detector`` model (``python -m train runtime-models``),
run by :mod:`facecodec.runtime`: detection works offline and without PyTorch.
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
    """MTCNN (Zhang et al. 2016), the registered detector, loaded on first use.

    ``min_face_size`` is the smallest face looked for (pixels): the image pyramid starts at
    ``12 / min_face_size``, so a larger minimum is a smaller, cheaper pyramid. ``factor`` is the
    pyramid's scale step (default ``FACECODEC_MTCNN_FACTOR``, 0.709; coarser is faster).
    """

    def __init__(self, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float | None = None):
        from facecodec.settings import get_settings

        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.factor = factor or get_settings().mtcnn_factor
        self._model = None
        self._lock = threading.Lock()

    def _get(self):
        with self._lock:
            if self._model is None:
                from facecodec.frontend.mtcnn import Mtcnn

                self._model = Mtcnn.from_registry(min_face_size=self.min_face_size, thresholds=self.thresholds,
                                                  factor=self.factor)  # the networks are compiled once per process
            return self._model

    def detect(self, image: np.ndarray, regions: list[tuple[int, int, int, int]] | None = None) -> list[Detection]:
        """All faces in ``image``, most probable first; with ``regions`` ((x1, y1, x2, y2) boxes that do
        not overlap), only the faces inside them (each region is searched on its own)."""
        image = check_image(image)
        h, w = image.shape[:2]
        out = []
        for x1, y1, x2, y2 in regions if regions is not None else [(0, 0, w, h)]:
            # sides rounded up to multiples of 32 pixels: fewer distinct shapes for the runtime's kernel cache
            x2, y2 = x1 + -(-(x2 - x1) // 32) * 32, y1 + -(-(y2 - y1) // 32) * 32
            x1, y1, x2, y2 = max(0, int(x1)), max(0, int(y1)), min(w, int(x2)), min(h, int(y2))
            if min(x2 - x1, y2 - y1) < self.min_face_size:  # the image pyramid would be empty
                continue
            found = self._get().detect(image[y1:y2, x1:x2])
            shift = np.array([x1, y1], np.float32)
            out += [Detection((float(b[0] + x1), float(b[1] + y1), float(b[2] + x1), float(b[3] + y1)), float(p),
                              pt + shift) for b, p, pt in zip(found.boxes, found.probs, found.points)]
        return sorted(out, key=lambda d: -d.probability)


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
