"""The edge pipeline: frame -> faces (detect, align, describe) -> base layer -> observation.

One :class:`FacePipeline` per camera, with the camera's detection settings; the networks behind it
(MTCNN, dlib's descriptor) are compiled once per process and shared by every camera
(:func:`facecodec.runtime.registered`), each call running on the calling worker's core. This module
decides which faces are worth describing and sending and packs them into the wire format
(``facewire.v2.SpooledFace``); :mod:`edge_agent.agent` runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from edge_agent.settings import DetectionConfig

BaseEncoder = Callable[[np.ndarray, str], bytes]
Region = tuple[int, int, int, int]


def default_base_encoder(feature: np.ndarray, backend: str) -> bytes:
    from facecodec import base_layer

    return base_layer.encode(feature, backend)


class StageClock:
    """Wall-clock seconds spent per stage, summed (one per camera worker; read by the status and the bench)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


class FacePipeline:
    """Detect (in the regions given: where the scene changed), keep the confident, large faces, then
    align and describe only those; encode the base layer of the ones that are sent.

    ``frontend`` replaces detection, alignment and description at once (tests): an object with
    ``analyze(rgb, regions) -> list[Face]``.
    """

    def __init__(self, frontend=None, backend: str | None = None, encode_base: BaseEncoder | None = None,
                 detection: DetectionConfig | None = None):
        self._frontend = frontend
        self._backend_name = backend
        self.encode_base = encode_base or default_base_encoder
        self.detection = detection or DetectionConfig()
        self._detector = None
        self._backend = None
        self.clock = StageClock()

    @property
    def detector(self):
        if self._detector is None:
            from facecodec.frontend.detect import MtcnnDetector

            d = self.detection
            # Faces below min_face_size are not sent, so MTCNN need not look for them: a coarser image
            # pyramid makes detection cheaper.
            self._detector = MtcnnDetector(min_face_size=max(12, int(d.min_face_size)), thresholds=d.thresholds,
                                           factor=d.factor)
        return self._detector

    @property
    def backend(self):
        """The feature backend (``FACECODEC_FEATURE_BACKEND`` unless told; dlib's network is run as
        ``FACECODEC_DLIB_ENGINE`` says), shared by every camera."""
        if self._backend is None:
            from facecodec.frontend.features import get_backend

            self._backend = get_backend(self._backend_name)
        return self._backend

    def warm_up(self) -> None:
        """Compile the networks now (the first frame would wait for it otherwise)."""
        if self._frontend is None:
            gray = np.full((96, 96, 3), 127, np.uint8)
            self.detector.detect(gray)
            self.backend.embed([np.zeros((150, 150, 3), np.uint8)])

    def analyze(self, rgb: np.ndarray, regions: list[Region] | None = None) -> list:
        """Faces in ``rgb`` (within ``regions`` when given) good enough to send: found by the detector
        (not a fallback box), confident and large; aligned and described."""
        from facecodec.frontend import Face

        if self._frontend is not None:
            faces = self._frontend.analyze(rgb, regions)
            return [f for f in faces if self._wanted(f.detection)]
        t = time.perf_counter()
        detections = [d for d in self.detector.detect(rgb, regions) if self._wanted(d)]
        t = self.clock.add("detect", t)
        if not detections:
            return []
        chips = [self.backend.align(rgb, d) for d in detections]
        t = self.clock.add("align", t)
        features = self.backend.embed(chips)
        self.clock.add("describe", t)
        return [Face(d, c, f, self.backend.name) for d, c, f in zip(detections, chips, features)]

    def _wanted(self, detection) -> bool:
        q = detection.quality
        return not q.fallback and q.probability >= self.detection.min_probability \
            and q.face_size >= self.detection.min_face_size


def spooled_face(face, base: bytes, capture_ms: int, track_seq: int) -> bytes:
    """One sent face as the spool keeps it (``facewire.v2.SpooledFace``): the box in whole pixels, the
    detector's confidence in percent, the seq of its track's first observation, the base layer."""
    from facewire.v2 import ingest_pb2 as pb2

    x1, y1, x2, y2 = face.detection.box
    x, y = max(0, round(x1)), max(0, round(y1))
    return pb2.SpooledFace(capture_ms=int(capture_ms), x=x, y=y, width=max(1, round(x2) - x),
                           height=max(1, round(y2) - y), probability=min(100, max(0, round(100 * face.quality.probability))),
                           track_seq=track_seq, base_layer=base).SerializeToString()
