"""Checks every face observation from the wire before anything is stored (issue 6, "wire validation").

A bad observation becomes a :class:`Rejection` naming the field and the reason; it never raises
past :func:`validate_observation`, so one bad message cannot take a stream down, and nothing is
written for it. The base layer is decoded here: matching runs on the decoded feature. A batch is
checked by :func:`validate_batch`, which decodes its base layers together.
"""

from __future__ import annotations

import asyncio
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
    _check_base_size(payload)
    try:
        decoded = base_layer.decode(payload)
    except PayloadError as e:
        raise ValidationFailure("base_layer", str(e)) from None
    _check_feature(decoded)
    return decoded


def _check_base_size(payload: bytes) -> None:
    if not 0 < len(payload) <= MAX_BASE_BYTES:
        raise ValidationFailure("base_layer", f"{len(payload)} bytes; a base layer has 1-{MAX_BASE_BYTES}")


def _check_feature(decoded: base_layer.DecodedBase) -> None:
    if not np.isfinite(decoded.feature).all():
        raise ValidationFailure("base_layer", "decodes to a non-finite feature")


def validate_observation(obs: ingest_pb2.FaceObservation, stream_camera: str, now_ms: int,
                         retention_ms: int) -> Observation:
    """The stored form of ``obs`` sent on ``stream_camera``'s stream, or :class:`ValidationFailure`."""
    fields = _check_fields(obs, stream_camera, now_ms, retention_ms)
    return _with_feature(obs, fields, decode_feature(fields[-1]))


def validate_batch(observations: list[ingest_pb2.FaceObservation], stream_camera: str, now_ms: int,
                   retention_ms: int) -> list[Observation | ValidationFailure]:
    """:func:`validate_observation` of each observation (its result or its failure), the base
    layers decoded together by :func:`facecodec.base_layer.decode_many`."""
    out, todo = _check_batch(observations, stream_camera, now_ms, retention_ms)
    return _finish_batch(observations, out, todo, base_layer.decode_many([f[-1] for _, f in todo]))


_HOPS = 3  # turns of the event loop a decode waits for more batches while more keep arriving


class BatchValidator:
    """:func:`validate_batch` for the streams of one event loop, their base layers decoded together.

    Batches that reach :meth:`validate` in the same turn of the event loop (several cameras'
    streams under load) share one :func:`facecodec.base_layer.decode_many` call: its vectorised
    rANS decoder costs about the same for 30 payloads as for 300.
    """

    def __init__(self) -> None:
        self._waiting: list[tuple[list[bytes], asyncio.Future]] = []

    async def validate(self, observations: list[ingest_pb2.FaceObservation], stream_camera: str, now_ms: int,
                       retention_ms: int) -> list[Observation | ValidationFailure]:
        out, todo = _check_batch(observations, stream_camera, now_ms, retention_ms)
        if not todo:
            return out
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._decode, loop, _HOPS)
        self._waiting.append(([f[-1] for _, f in todo], future))
        return _finish_batch(observations, out, todo, await future)

    def _decode(self, loop: asyncio.AbstractEventLoop, hops: int, joined: int = 0) -> None:
        if hops > 1 and len(self._waiting) > joined:  # others joined during the last turn: wait one more
            loop.call_soon(self._decode, loop, hops - 1, len(self._waiting))
            return
        waiting, self._waiting = self._waiting, []
        try:
            decoded = base_layer.decode_many([p for payloads, _ in waiting for p in payloads])
        except Exception as e:  # a bug, not a bad payload (those are results): every waiter sees it
            for _, future in waiting:
                if not future.done():
                    future.set_exception(e)
            return
        start = 0
        for payloads, future in waiting:
            if not future.done():  # its stream may have been cancelled meanwhile
                future.set_result(decoded[start:start + len(payloads)])
            start += len(payloads)


def _check_batch(observations: list[ingest_pb2.FaceObservation], stream_camera: str, now_ms: int,
                 retention_ms: int) -> tuple[list, list[tuple[int, tuple]]]:
    out: list[Observation | ValidationFailure | None] = [None] * len(observations)
    todo: list[tuple[int, tuple]] = []
    for j, obs in enumerate(observations):
        try:
            fields = _check_fields(obs, stream_camera, now_ms, retention_ms)
            _check_base_size(fields[-1])
        except ValidationFailure as e:
            out[j] = e
            continue
        todo.append((j, fields))
    return out, todo


def _finish_batch(observations: list[ingest_pb2.FaceObservation], out: list, todo: list[tuple[int, tuple]],
                  decoded: list) -> list[Observation | ValidationFailure]:
    for (j, fields), d in zip(todo, decoded):
        try:
            if isinstance(d, PayloadError):
                raise ValidationFailure("base_layer", str(d))
            _check_feature(d)
            out[j] = _with_feature(observations[j], fields, d)
        except ValidationFailure as e:
            out[j] = e
    return out


def _check_fields(obs: ingest_pb2.FaceObservation, stream_camera: str, now_ms: int, retention_ms: int) -> tuple:
    """Every check of ``obs`` but its base layer's decoding: (face id, camera id, time, box, payload)."""
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
    box = (float(b.x1), float(b.y1), float(b.x2), float(b.y2))
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
    return face_id, camera_id, int(t), box, bytes(obs.base_layer)


def _with_feature(obs: ingest_pb2.FaceObservation, fields: tuple, decoded: base_layer.DecodedBase) -> Observation:
    face_id, camera_id, t, box, payload = fields
    if obs.feature_backend and obs.feature_backend != decoded.backend:
        raise ValidationFailure("feature_backend", f"{obs.feature_backend[:40]!r} but the payload says {decoded.backend!r}")
    q = obs.quality
    return Observation(face_id, camera_id, t, box, float(q.probability),
                       float(q.face_size), bool(q.fallback), obs.track_id, payload, decoded.backend, decoded.model,
                       decoded.step_index, np.asarray(decoded.feature, np.float32))
