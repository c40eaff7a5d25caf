"""The edge pipeline: frame -> faces (detect, align, feature) -> base layer -> observation.

The heavy stages are :class:`facecodec.frontend.FaceFrontEnd` (MTCNN, dlib alignment and
descriptor) and :func:`facecodec.base_layer.encode`; this module only decides which faces are
worth sending and packs them into the wire format (``facewire.v1.FaceObservation``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

BaseEncoder = Callable[[np.ndarray, str], bytes]


def default_base_encoder(feature: np.ndarray, backend: str) -> bytes:
    from facecodec import base_layer

    return base_layer.encode(feature, backend)


class FacePipeline:
    """Detect, align and describe faces; encode the base layer of the ones that are sent.

    One instance is shared by every camera of the agent: the dlib network is not safe to call
    from two threads at once, and on a small edge box the cores are better spent on one face
    at a time than on contention, so :meth:`analyze` is serialised by a lock.
    """

    def __init__(self, frontend=None, backend: str | None = None, encode_base: BaseEncoder | None = None,
                 min_face_size: float = 40.0, min_probability: float = 0.9, descriptor_engine: str = "runtime"):
        self._frontend = frontend
        self._backend_name = backend
        self.descriptor_engine = descriptor_engine
        self.encode_base = encode_base or default_base_encoder
        self.min_face_size = min_face_size
        self.min_probability = min_probability
        self._lock = threading.Lock()

    @property
    def frontend(self):
        if self._frontend is None:
            from facecodec.frontend import FaceFrontEnd
            from facecodec.frontend.detect import MtcnnDetector

            # Faces below min_face_size are not sent, so MTCNN need not look for them: a coarser
            # image pyramid makes detection on whole frames cheaper.
            detector = MtcnnDetector(min_face_size=max(20, int(self.min_face_size)))
            self._frontend = FaceFrontEnd(self._feature_backend(), detector=detector)
        return self._frontend

    def _feature_backend(self):
        """The feature backend; dlib's network runs in PyTorch unless told otherwise (same features)."""
        from facecodec.frontend.features import get_backend
        from facecodec.settings import get_settings

        name = self._backend_name or get_settings().feature_backend
        if name == "dlib-resnet-128":
            from facecodec.frontend.features import DlibResnet128

            return DlibResnet128(engine=self.descriptor_engine)
        return get_backend(name)

    def analyze(self, rgb: np.ndarray) -> list:
        """Faces in ``rgb`` good enough to send: confident, large, found by the detector."""
        with self._lock:
            faces = self.frontend.analyze(rgb)
        return [f for f in faces if not f.quality.fallback and f.quality.probability >= self.min_probability
                and f.quality.face_size >= self.min_face_size]


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
