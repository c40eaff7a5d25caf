"""Checks every face observation from the wire before anything is stored (issue 6, "wire validation").

A bad observation becomes a :class:`Rejection` naming the field and the reason; it never raises
past :func:`validate_observation`, so one bad message cannot take a stream down, and nothing is
written for it. The base layer is decoded here: matching runs on the decoded feature.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from facecodec import base_layer
from facecodec.errors import PayloadError
from facewire.v1 import ingest_pb2

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
MAX_BASE_BYTES = 4096
MAX_FUTURE_MS = 24 * 3600 * 1000  # camera clocks may drift; a day ahead is a broken clock
MAX_COORD = 1e5


class ValidationFailure(ValueError):
    """One field of an observation is unusable."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Observation:
    """A validated observation, with its decoded base layer."""

    face_id: str
    camera_id: str
    capture_ms: int
    box: tuple[float, float, float, float]
    probability: float
    face_size: float
    fallback: bool
    track_id: str
    base_layer: bytes
    backend: str
    model: str
    step_index: int
    feature: np.ndarray


def check_id(kind: str, value: str) -> str:
    """Ids become parts of Redis keys and URLs: a short, plain alphabet only."""
    if not ID_PATTERN.match(value or ""):
        raise ValidationFailure(kind, f"{value[:40]!r} is not a valid id (1-128 of A-Z a-z 0-9 . _ : @ -, "
                                      "starting with a letter or digit)")
    return value


def decode_feature(payload: bytes) -> base_layer.DecodedBase:
    """Decode a base layer and check the feature is usable; :class:`ValidationFailure` otherwise."""
    if not 0 < len(payload) <= MAX_BASE_BYTES:
        raise ValidationFailure("base_layer", f"{len(payload)} bytes; a base layer has 1-{MAX_BASE_BYTES}")
    try:
        decoded = base_layer.decode(payload)
    except PayloadError as e:
        raise ValidationFailure("base_layer", str(e)) from None
    if not np.all(np.isfinite(decoded.feature)):
        raise ValidationFailure("base_layer", "decodes to a non-finite feature")
    return decoded


def validate_observation(obs: ingest_pb2.FaceObservation, stream_camera: str, now_ms: int,
                         retention_ms: int) -> Observation:
    """The stored form of ``obs`` sent on ``stream_camera``'s stream, or :class:`ValidationFailure`."""
    face_id = check_id("face_id", obs.face_id)
    camera_id = obs.camera_id or stream_camera
    if camera_id != stream_camera:
        raise ValidationFailure("camera_id", f"{camera_id[:40]!r} differs from the stream's camera {stream_camera!r}")
    t = obs.capture_time_ms
    if t <= 0 or t > now_ms + MAX_FUTURE_MS:
        raise ValidationFailure("capture_time_ms", f"{t} is not a plausible Unix time in milliseconds")
    if t < now_ms - retention_ms:
        raise ValidationFailure("capture_time_ms", "older than the retention period; it would be erased at once")
    b = obs.box
    box = (b.x1, b.y1, b.x2, b.y2)
    if not all(math.isfinite(v) and abs(v) <= MAX_COORD for v in box) or b.x2 <= b.x1 or b.y2 <= b.y1:
        raise ValidationFailure("box", f"{tuple(round(v, 1) for v in box)} is not a box with x1 < x2 and y1 < y2")
    q = obs.quality
    if not (math.isfinite(q.probability) and 0.0 <= q.probability <= 1.0):
        raise ValidationFailure("quality.probability", f"{q.probability} is outside [0, 1]")
    if not (math.isfinite(q.face_size) and 0.0 <= q.face_size <= MAX_COORD):
        raise ValidationFailure("quality.face_size", f"{q.face_size} is not a size in pixels")
    if obs.track_id:
        check_id("track_id", obs.track_id)
    if obs.format_version and obs.format_version != base_layer.VERSION:
        raise ValidationFailure("format_version", f"{obs.format_version} is not the base-layer format this server "
                                                  f"reads ({base_layer.VERSION})")
    payload = bytes(obs.base_layer)
    decoded = decode_feature(payload)
    if obs.feature_backend and obs.feature_backend != decoded.backend:
        raise ValidationFailure("feature_backend", f"{obs.feature_backend[:40]!r} but the payload says {decoded.backend!r}")
    return Observation(face_id, camera_id, int(t), tuple(float(v) for v in box), float(q.probability),
                       float(q.face_size), bool(q.fallback), obs.track_id, payload, decoded.backend, decoded.model,
                       decoded.step_index, np.asarray(decoded.feature, np.float32))
