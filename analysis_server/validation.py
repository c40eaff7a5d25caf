"""Checks every face observation from the wire before anything is stored (issue 6, "wire validation").

A bad observation becomes a :class:`Rejection` naming the field and the reason; it never raises
past :func:`validate_observation`, so one bad message cannot take a stream down, and nothing is
written for it. The base layer is decoded here: matching runs on the decoded feature. A batch is
checked by :func:`validate_batch`, which decodes its base layers together.
"""

from __future__ import annotations

import asyncio
import re
from typing import NamedTuple

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


class Observation(NamedTuple):
    """A validated observation, with its decoded base layer (a named tuple: 5x cheaper to make
    than a frozen dataclass, and one is made per face at ingest)."""

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
    """Decode a base layer; :class:`ValidationFailure` if it is not one.

    The feature is finite by construction: bounded symbols through a model whose values
    :class:`facecodec.base_layer.BaseLayerModel` checked when it was loaded.
    """
    _check_base_size(payload)
    try:
        return base_layer.decode(payload)
    except PayloadError as e:
        raise ValidationFailure("base_layer", str(e)) from None


def _check_base_size(payload: bytes) -> None:
    if not 0 < len(payload) <= MAX_BASE_BYTES:
        raise ValidationFailure("base_layer", f"{len(payload)} bytes; a base layer has 1-{MAX_BASE_BYTES}")


def validate_observation(obs: ingest_pb2.FaceObservation, stream_camera: str, now_ms: int,
                         retention_ms: int) -> Observation:
    """The stored form of ``obs`` sent on ``stream_camera``'s stream, or :class:`ValidationFailure`."""
    fields = _check_fields(obs, stream_camera, now_ms, retention_ms)
    return _with_feature(fields, decode_feature(fields[PAYLOAD]))


def validate_batch(observations: list[ingest_pb2.FaceObservation], stream_camera: str, now_ms: int,
                   retention_ms: int) -> list[Observation | ValidationFailure]:
    """:func:`validate_observation` of each observation (its result or its failure), the base
    layers decoded together by :func:`facecodec.base_layer.decode_many`."""
    out, todo = _check_batch(observations, stream_camera, now_ms, retention_ms)
    return _finish_batch(out, todo, base_layer.decode_many([f[PAYLOAD] for _, f in todo]))


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
        self._waiting.append(([f[PAYLOAD] for _, f in todo], future))
        return _finish_batch(out, todo, await future)

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
            _check_base_size(fields[PAYLOAD])
        except ValidationFailure as e:
            out[j] = e
            continue
        todo.append((j, fields))
    return out, todo


def _finish_batch(out: list, todo: list[tuple[int, tuple]], decoded: list) -> list[Observation | ValidationFailure]:
    for (j, fields), d in zip(todo, decoded):
        try:
            if isinstance(d, PayloadError):
                raise ValidationFailure("base_layer", str(d))
            out[j] = _with_feature(fields, d)
        except ValidationFailure as e:
            out[j] = e
    return out


PAYLOAD = 8  # where the base-layer payload is in what _check_fields returns


def _check_fields(obs: ingest_pb2.FaceObservation, stream_camera: str, now_ms: int, retention_ms: int) -> tuple:
    """Every check of ``obs`` but its base layer's decoding; the values read, in
    :class:`Observation`'s order up to the payload, then the feature backend it names.

    Runs for every face at ingest, so each field is read from the message once, and the range
    checks are chained comparisons (which NaN fails, as it fails every comparison).
    """
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
    if not (-MAX_COORD <= box[0] < box[2] <= MAX_COORD and -MAX_COORD <= box[1] < box[3] <= MAX_COORD):
        raise ValidationFailure("box", f"{tuple(round(v, 1) for v in box)} is not a box with x1 < x2 and y1 < y2")
    q = obs.quality
    probability, face_size = q.probability, q.face_size
    if not 0.0 <= probability <= 1.0:
        raise ValidationFailure("quality.probability", f"{probability} is outside [0, 1]")
    if not 0.0 <= face_size <= MAX_COORD:
        raise ValidationFailure("quality.face_size", f"{face_size} is not a size in pixels")
    track_id = obs.track_id
    if track_id:
        check_id("track_id", track_id)
    if obs.format_version and obs.format_version not in base_layer.VERSIONS:
        raise ValidationFailure("format_version", f"{obs.format_version} is not a base-layer format this server "
                                                  f"reads {base_layer.VERSIONS}")
    return (face_id, camera_id, t, box, probability, face_size, q.fallback, track_id, obs.base_layer,
            obs.feature_backend)


def _with_feature(fields: tuple, decoded: base_layer.DecodedBase) -> Observation:
    feature_backend = fields[-1]
    if feature_backend and feature_backend != decoded.backend:
        raise ValidationFailure("feature_backend", f"{feature_backend[:40]!r} but the payload says {decoded.backend!r}")
    return Observation(*fields[:-1], decoded.backend, decoded.model, decoded.step_index, decoded.feature)
