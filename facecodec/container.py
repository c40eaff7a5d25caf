"""The scalable payload: one base layer and zero or more enhancement layers in one container.

Each layer keeps its own self-describing payload (and checksum), so any enhancement layer
decodes on its own from the base. Container (format version 1)::

    0       0xC0 | version
    1       number of layers n (1..15); layer 0 is the base layer
    2..     n entries of 3 bytes: kind (1 = base, 2 = enhancement), length (uint16, big endian)
    +0..1   CRC-16/CCITT of every other byte
    ...     the layers' payloads, in entry order
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field

import numpy as np

from facecodec.errors import CorruptPayloadError, TruncatedPayloadError, UnknownFormatError

MAGIC = 0xC0
VERSION = 1
BASE, ENHANCEMENT = 1, 2
ENTRY = struct.Struct(">BH")


@dataclass(frozen=True)
class ScalableFace:
    base: bytes
    enhancements: list[bytes] = field(default_factory=list)


def pack(face: ScalableFace) -> bytes:
    layers = [(BASE, face.base)] + [(ENHANCEMENT, e) for e in face.enhancements]
    if len(layers) > 15:
        raise ValueError("a container holds at most 14 enhancement layers")
    if any(len(p) > 0xFFFF or not p for _, p in layers):
        raise ValueError("every layer must hold 1 to 65535 bytes")
    head = bytes([MAGIC | VERSION, len(layers)]) + b"".join(ENTRY.pack(k, len(p)) for k, p in layers)
    body = b"".join(p for _, p in layers)
    return head + binascii.crc_hqx(head + body, 0xFFFF).to_bytes(2, "big") + body


def unpack(data: bytes) -> ScalableFace:
    """Split a container; only :class:`~facecodec.errors.PayloadError` on bad input."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UnknownFormatError(f"a container is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < 2:
        raise TruncatedPayloadError("container shorter than its header")
    if data[0] & 0xF0 != MAGIC:
        raise UnknownFormatError(f"not a scalable container (first byte 0x{data[0]:02x})")
    if data[0] & 0x0F != VERSION:
        raise UnknownFormatError(f"container format version {data[0] & 0x0F} is not supported (this decoder reads {VERSION})")
    n = data[1]
    if not 1 <= n <= 15:
        raise CorruptPayloadError(f"container claims {n} layers")
    end = 2 + ENTRY.size * n
    if len(data) < end + 2:
        raise TruncatedPayloadError("container shorter than its layer table")
    entries = [ENTRY.unpack_from(data, 2 + ENTRY.size * i) for i in range(n)]
    if entries[0][0] != BASE or any(k != ENHANCEMENT for k, _ in entries[1:]):
        raise CorruptPayloadError("container layers must be one base layer followed by enhancement layers")
    total = sum(length for _, length in entries)
    if len(data) < end + 2 + total:
        raise TruncatedPayloadError(f"container holds {len(data) - end - 2} of its {total} layer bytes")
    if len(data) > end + 2 + total:
        raise CorruptPayloadError("container has trailing bytes")
    if binascii.crc_hqx(data[:end] + data[end + 2 :], 0xFFFF) != int.from_bytes(data[end : end + 2], "big"):
        raise CorruptPayloadError("container checksum mismatch")
    layers, pos = [], end + 2
    for _, length in entries:
        layers.append(data[pos : pos + length])
        pos += length
    return ScalableFace(layers[0], layers[1:])


def decode_image(data: bytes, layer: str = "full", index: int = -1) -> np.ndarray:
    """The face from a container: ``base`` (reconstruction alone) or ``full`` (base + enhancement ``index``)."""
    from facecodec import enhancement, reconstruction

    face = unpack(data)
    if layer == "base" or not face.enhancements:
        return reconstruction.reconstruct(face.base)
    if layer != "full":
        raise ValueError(f"layer must be 'base' or 'full', not {layer!r}")
    return enhancement.decode(face.enhancements[index], face.base)
