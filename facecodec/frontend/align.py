"""Alignment: from a detection to the crop a feature backend expects.

``dlib`` backend: dlib's 5-point shape predictor runs inside the MTCNN box and
``dlib.get_face_chip`` makes the 150x150 chip (padding 0.25) that dlib's ResNet was trained on.
``facenet`` backend: the MTCNN box with a margin, resized to 160x160, as facenet-pytorch does.
"""

from __future__ import annotations

import threading

import numpy as np

from facecodec.frontend.detect import Detection
from facecodec.zoo import package_data_file

DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25


class DlibAligner:
    """dlib's 5-landmark shape predictor and chip extractor."""

    def __init__(self, size: int = DLIB_CHIP_SIZE, padding: float = DLIB_CHIP_PADDING):
        self.size = size
        self.padding = padding
        self._predictor = None
        self._lock = threading.Lock()

    def _get(self):
        with self._lock:
            if self._predictor is None:
                import dlib

                path = package_data_file("face_recognition_models", "models", "shape_predictor_5_face_landmarks.dat")
                self._predictor = dlib.shape_predictor(str(path))
            return self._predictor

    def align(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        import dlib

        x1, y1, x2, y2 = detection.box
        rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
        shape = self._get()(image, rect)
        return np.asarray(dlib.get_face_chip(image, shape, size=self.size, padding=self.padding))


class BoxAligner:
    """Square crop of the box plus a margin, resized (facenet-pytorch's ``extract_face``)."""

    def __init__(self, size: int = 160, margin: float = 0.2):
        self.size = size
        self.margin = margin

    def align(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        import cv2

        x1, y1, x2, y2 = detection.box
        side = max(x2 - x1, y2 - y1) * (1 + self.margin)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        scale = self.size / side
        m = np.array([[scale, 0, self.size / 2 - scale * cx], [0, scale, self.size / 2 - scale * cy]], np.float32)
        return cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
