"""The face front end: detect, align, extract the deep feature (paper 3.1, before coding)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecodec.errors import NoFaceError
from facecodec.frontend.detect import Detection, MtcnnDetector, Quality, center_fallback, check_image, pick_central
from facecodec.frontend.features import BACKENDS, FeatureBackend, get_backend

__all__ = ["Detection", "Face", "FaceFrontEnd", "Quality", "BACKENDS", "get_backend"]


@dataclass
class Face:
    """One analysed face: where it was, its aligned chip, and its deep feature."""

    detection: Detection
    chip: np.ndarray = field(repr=False)
    feature: np.ndarray = field(repr=False)
    backend: str

    @property
    def quality(self) -> Quality:
        return self.detection.quality


class FaceFrontEnd:
    """MTCNN detection + the backend's alignment + the backend's feature network."""

    def __init__(self, backend: str | FeatureBackend | None = None, detector: MtcnnDetector | None = None):
        self.backend = backend if backend is not None and not isinstance(backend, str) else get_backend(backend)
        self.detector = detector or MtcnnDetector()

    def analyze(self, image: np.ndarray) -> list[Face]:
        """Every face in ``image`` (RGB uint8), most confident first."""
        image = check_image(image)
        detections = self.detector.detect(image)
        return self._faces(image, detections)

    def analyze_main(self, image: np.ndarray, fallback: bool = True) -> Face:
        """The one face a pre-cropped photo is about (LFW convention: the central face).

        With ``fallback`` a centre box stands in when MTCNN finds nothing (recorded in
        ``face.quality.fallback``); without it, :class:`NoFaceError`.
        """
        image = check_image(image)
        chosen = pick_central(self.detector.detect(image), image.shape)
        if chosen is None:
            if not fallback:
                raise NoFaceError("no face detected")
            chosen = center_fallback(image)
        return self._faces(image, [chosen])[0]

    def _faces(self, image: np.ndarray, detections: list[Detection]) -> list[Face]:
        chips = [self.backend.align(image, d) for d in detections]
        feats = self.backend.embed(chips)
        return [Face(d, c, f, self.backend.name) for d, c, f in zip(detections, chips, feats)]
