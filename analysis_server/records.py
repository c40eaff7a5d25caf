"""The stored form of a face observation (storage layout 2): one packed value in a bucket hash.

A face is found by the 8-byte BLAKE2b hash of its id (:func:`face_hash`): its first two bytes name
the record bucket (one of :data:`BUCKETS` Redis hashes), the whole hash is the field, and the value
is :func:`pack_record`'s bytes, which hold the face id itself (a hash collision between two ids is
detected, never merged). The base-layer payload is the only copy of the feature: readers decode it
(``facecodec.base_layer.decode_many``, about 1-8 us a face) instead of keeping a float copy beside
it, which made a face cost about 1.9 kB of Redis memory in layout 1.

Record (all integers little-endian)::

    0x02 | t int64 (capture ms) | recv int32 (received - t, ms) | flags u8 (1: fallback box)
         | x1 y1 x2 y2 probability face_size float32 (as on the wire) | distance float64 (NaN: no match)
         | face id, camera id, identity id, track id: u8 length + UTF-8 each
         | base layer: u16 length + payload (sealed with FACESERVER_STORAGE_KEY when set)

An erased face's value is replaced by a tombstone, ``0x00 | t int64 | u8 length + face id``, kept
until its retention ends, so that an edge replaying it does not store it again. The backend,
model and step of a face are read from its base layer's own header.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from typing import NamedTuple

RECORD, TOMBSTONE = 2, 0
BUCKETS = 1 << 16  # record hashes: ~150 faces each at 1e7 faces (a compact listpack/ziplist in Redis)
SHARDS = 16  # time-index and change-log shards of the whole store (no hot key on a cluster)
PERIOD_MS = 300_000  # time-index buckets: 5 minutes of capture time each

_HEAD = struct.Struct("<BqiB6fd")
_TOMB = struct.Struct("<Bq")
_NAN = float("nan")


def face_hash(face_id: str) -> bytes:
    """The 8-byte hash that locates a face (BLAKE2b: an id cannot be chosen to land on another's)."""
    return hashlib.blake2b(face_id.encode(), digest_size=8).digest()


def bucket_of(h: bytes) -> int:
    return (h[0] << 8) | h[1]


def shard_of(h: bytes) -> int:
    return h[7] & (SHARDS - 1)


def log_shard(camera_id: str) -> int:
    """The change-log shard of a camera's faces (one entry per batch; a face's erasure follows it there)."""
    return zlib.crc32(camera_id.encode()) & (SHARDS - 1)


def period_of(t_ms: int) -> int:
    return t_ms // PERIOD_MS


class Record(NamedTuple):
    """A face record as stored (the base layer as stored: sealed or not)."""

    face_id: str
    camera_id: str
    capture_ms: int
    received_ms: int
    box: tuple[float, float, float, float]
    probability: float
    face_size: float
    fallback: bool
    track_id: str
    identity_id: str  # "" when unmatched
    distance: float | None
    base: bytes


def _short(s: str) -> bytes:
    b = s.encode()
    if len(b) > 255:
        raise ValueError(f"{s[:40]!r}... is longer than 255 bytes")
    return bytes((len(b),)) + b


def pack_record(face_id: str, camera_id: str, capture_ms: int, received_ms: int, box, probability: float,
                face_size: float, fallback: bool, track_id: str, identity_id: str, distance: float | None,
                base: bytes) -> bytes:
    """The stored value of a face (see the module docstring)."""
    recv = max(-(2**31), min(2**31 - 1, int(received_ms) - int(capture_ms)))
    return b"".join((
        _HEAD.pack(RECORD, int(capture_ms), recv, 1 if fallback else 0, box[0], box[1], box[2], box[3],
                   probability, face_size, _NAN if distance is None else distance),
        _short(face_id), _short(camera_id), _short(identity_id), _short(track_id),
        struct.pack("<H", len(base)), base))


def pack_tombstone(face_id: str, capture_ms: int) -> bytes:
    return _TOMB.pack(TOMBSTONE, int(capture_ms)) + _short(face_id)


def is_tombstone(value: bytes | None) -> bool:
    return value is not None and value[:1] == b"\x00"


def value_face_id(value: bytes) -> str:
    """The face id a stored value (record or tombstone) belongs to."""
    at = _HEAD.size if value[0] == RECORD else _TOMB.size
    return value[at + 1: at + 1 + value[at]].decode()


def value_time(value: bytes) -> int:
    """The capture time of a stored value (record or tombstone)."""
    return struct.unpack_from("<q", value, 1)[0]


def unpack_record(value: bytes) -> Record:
    """The record in ``value`` (:class:`ValueError` for a tombstone or an unknown format)."""
    if not value or value[0] != RECORD:
        raise ValueError("not a face record (a tombstone, or a format this server does not read)")
    _, t, recv, flags, x1, y1, x2, y2, prob, size, dist = _HEAD.unpack_from(value)
    at = _HEAD.size
    strings = []
    for _ in range(4):
        n = value[at]
        strings.append(value[at + 1: at + 1 + n].decode())
        at += 1 + n
    (n,) = struct.unpack_from("<H", value, at)
    base = value[at + 2: at + 2 + n]
    face_id, camera_id, identity_id, track_id = strings
    return Record(face_id, camera_id, t, t + recv, (x1, y1, x2, y2), prob, size, bool(flags & 1), track_id,
                  identity_id, None if math.isnan(dist) else dist, base)


def with_match(value: bytes, identity_id: str, distance: float) -> bytes:
    """``value`` (a record) matched to another identity."""
    r = unpack_record(value)
    return pack_record(r.face_id, r.camera_id, r.capture_ms, r.received_ms, r.box, r.probability, r.face_size,
                       r.fallback, r.track_id, identity_id, distance, r.base)
