"""The edge pipeline: frame -> faces (detect, align, describe) -> base layer -> observation.

One :class:`FacePipeline` per camera, with the camera's detection settings; the networks behind it
(MTCNN, dlib's descriptor) are compiled once per process and shared by every camera
(:func:`facecodec.runtime.registered`), each call running on the calling worker's core. This module
decides which faces are worth describing and sending and packs them into the wire format
(``facewire.v1.FaceObservation``); :mod:`edge_agent.agent` runs it.
"""

from __future__ import annotations

import time
import uuid
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
                 detection: DetectionConfig | None = None, descriptor_engine: str = "runtime"):
        self._frontend = frontend
        self._backend_name = backend
        self.descriptor_engine = descriptor_engine
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
        """The feature backend; dlib's network is run converted by the runtime unless told otherwise."""
        if self._backend is None:
            from facecodec.frontend.features import DlibResnet128, get_backend
            from facecodec.settings import get_settings

            name = self._backend_name or get_settings().feature_backend
            self._backend = DlibResnet128(engine=self.descriptor_engine) if name == "dlib-resnet-128" \
                else get_backend(name)
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


def new_face_id() -> str:
    """A face id, unique across cameras and agents (stored with the observation, so replays keep it)."""
    return uuid.uuid4().hex


def make_observation(face_id: str, camera_id: str, track_id: str, face, base: bytes, capture_ms: int):
    """The ``FaceObservation`` message for one sent face."""
    from facecodec import base_layer
    from facewire.v1 import ingest_pb2 as pb

    x1, y1, x2, y2 = face.detection.box
    q = face.quality
    return pb.FaceObservation(
        face_id=face_id,
        camera_id=camera_id,
        capture_time_ms=int(capture_ms),
        box=pb.Box(x1=x1, y1=y1, x2=x2, y2=y2),
        quality=pb.Quality(probability=q.probability, face_size=q.face_size, fallback=q.fallback),
        base_layer=base,
        format_version=base_layer.VERSION,
        feature_backend=face.backend,
        track_id=track_id,
    )
