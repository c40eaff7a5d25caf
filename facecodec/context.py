"""The context layer: the camera frame around the person, downscaled and coded once, kept at the edge.

The enhancement layer rebuilds the 112x112 face crop (paper 3.3), which is tight around the face:
forehead, hair and chin are cut off and there is no scene. An operator who verifies a match needs
more, so the edge also keeps, for every face it sends, a picture of the frame region around the
person (``scale`` face sizes wide, 4:3 portrait, the face in the upper third), downscaled so that
its longer side is at most ``size`` pixels and coded with an image codec (AVIF by default: the
smallest at equal quality among those the enhancement layer uses, see eval/results). It leaves the
edge only when an operator asks for it, like the texture, and under the texture's rules.

Payload (self-describing, like the other layers)::

    0      0xD0 | version (1)
    1      image codec code (facecodec.image_codecs)
    2      quality
    3-6    the picture's width and height (uint16 each, big endian)
    7-14   the face's box in the picture: x, y, width, height (uint16 each)
    15-22  the picture's region of the camera frame: x, y, width, height (uint16 each, frame pixels)
    23-24  CRC-16/CCITT of every other byte
    25-    the image codec's stream of the picture
"""

from __future__ import annotations

import binascii
import io
import struct
from dataclasses import dataclass

import numpy as np

from facecodec.errors import CorruptPayloadError, ImageError, TruncatedPayloadError, UnknownFormatError

MAGIC = 0xD0
VERSION = 1
HEADER = struct.Struct(">BBBHHHHHHHHHHH")  # magic, codec, quality, w, h, face box (4), region (4), crc
MAX_SIDE = 4096  # no context picture is larger; a stream that declares more is refused before decoding
MAX_BODY = 1 << 20
CODECS = ("avif", "webp", "jpeg", "jpeg2000", "png")  # the learned codecs code 112x112 residuals only
Box = tuple[int, int, int, int]  # x, y, width, height


@dataclass(frozen=True)
class ContextPicture:
    """The picture around a face: RGB uint8, where the face is in it, where it is in the frame."""

    image: np.ndarray
    face_box: Box
    region: Box


@dataclass(frozen=True)
class ContextHeader:
    codec: str
    quality: int
    width: int
    height: int
    face_box: Box
    region: Box


def region_around(box: tuple[float, float, float, float], frame_shape: tuple[int, ...], scale: float = 3.0) -> Box:
    """The frame region around the face ``box`` (x1, y1, x2, y2): ``scale`` face sizes wide, 4:3
    portrait with the face's centre at 30% of its height (head, shoulders, the upper body), moved
    inside the frame where it would leave it and cut to the frame where it is larger."""
    x1, y1, x2, y2 = box
    fh, fw = frame_shape[:2]
    side = max(x2 - x1, y2 - y1, 1.0)
    w = min(float(fw), scale * side)
    h = min(float(fh), w * 4 / 3)
    left = (x1 + x2) / 2 - w / 2
    top = (y1 + y2) / 2 - 0.3 * h
    left = min(max(0.0, left), fw - w)
    top = min(max(0.0, top), fh - h)
    rx, ry = int(round(left)), int(round(top))
    return rx, ry, max(1, min(fw - rx, int(round(w)))), max(1, min(fh - ry, int(round(h))))


def cut(frame: np.ndarray, box: tuple[float, float, float, float], scale: float = 3.0,
        size: int = 320) -> ContextPicture:
    """The context picture of the face ``box`` in ``frame`` (RGB uint8): :func:`region_around`,
    downscaled (area averaging, never enlarged) so that its longer side is at most ``size``."""
    import cv2

    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ImageError(f"expected an RGB uint8 frame, got {getattr(frame, 'shape', type(frame))}")
    if not 16 <= size <= MAX_SIDE:
        raise ValueError(f"a context picture's size is 16-{MAX_SIDE} pixels, not {size}")
    rx, ry, rw, rh = region_around(box, frame.shape, scale)
    image = frame[ry:ry + rh, rx:rx + rw]
    k = min(1.0, size / max(rw, rh))
    if k < 1.0:
        image = cv2.resize(image, (max(1, round(rw * k)), max(1, round(rh * k))), interpolation=cv2.INTER_AREA)
    else:
        image = np.ascontiguousarray(image)
    ph, pw = image.shape[:2]
    x1, y1, x2, y2 = box
    fx, fy = max(0, int(round((x1 - rx) * k))), max(0, int(round((y1 - ry) * k)))
    face = (min(fx, pw - 1), min(fy, ph - 1), max(1, min(pw - fx, int(round((x2 - x1) * k)))),
            max(1, min(ph - fy, int(round((y2 - y1) * k)))))
    return ContextPicture(image, face, (rx, ry, rw, rh))


def _save(codec: str, image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    from facecodec.image_codecs import image_codec

    if codec == "avif":  # a faster encoder setting than the enhancement layer's: this runs for every face sent
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "AVIF", quality=max(0, min(quality, 100)), speed=8)
        return buf.getvalue()
    return image_codec(codec).encode(image, quality)


def encode(picture: ContextPicture, codec: str = "avif", quality: int = 50) -> bytes:
    """The context payload of ``picture``."""
    from facecodec.image_codecs import image_codec

    if codec not in CODECS:
        raise ValueError(f"a context picture is coded with one of {', '.join(CODECS)}, not {codec!r}")
    if not 0 <= quality <= 100:
        raise ValueError(f"quality {quality} is outside 0-100")
    h, w = picture.image.shape[:2]
    if max(h, w) > MAX_SIDE or min(*picture.region, *picture.face_box) < 0 or max(*picture.region) > 65535:
        raise ValueError("a context picture larger than 4096 px, or a box out of range")
    body = _save(codec, np.ascontiguousarray(picture.image), quality)
    head = HEADER.pack(MAGIC | VERSION, image_codec(codec).code, quality, w, h, *picture.face_box, *picture.region, 0)[:-2]
    return head + binascii.crc_hqx(head + body, 0xFFFF).to_bytes(2, "big") + body


def read_header(payload: bytes) -> ContextHeader:
    """The header of a context payload, its checksum checked; :class:`PayloadError` if it is not one."""
    from facecodec.image_codecs import BY_CODE

    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise UnknownFormatError(f"a context payload is bytes, not {type(payload).__name__}")
    payload = bytes(payload)
    if not payload:
        raise TruncatedPayloadError("empty context payload")
    if payload[0] & 0xF0 != MAGIC:
        raise UnknownFormatError(f"not a context payload (first byte 0x{payload[0]:02x})")
    if payload[0] & 0x0F != VERSION:
        raise UnknownFormatError(f"context format version {payload[0] & 0x0F} is not supported (this decoder reads 1)")
    if len(payload) < HEADER.size + 1:
        raise TruncatedPayloadError(f"context payload of {len(payload)} bytes is shorter than its header")
    _, code, quality, w, h, *boxes, crc = HEADER.unpack_from(payload)
    if code not in BY_CODE or BY_CODE[code].name not in CODECS:
        raise UnknownFormatError(f"image codec code {code} does not code context pictures")
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE) or quality > 100:
        raise CorruptPayloadError("context header values out of range")
    if len(payload) - HEADER.size > MAX_BODY:
        raise CorruptPayloadError("context body is larger than any context picture needs")
    if binascii.crc_hqx(payload[: HEADER.size - 2] + payload[HEADER.size:], 0xFFFF) != crc:
        raise CorruptPayloadError("context checksum mismatch: the payload is truncated or corrupted")
    return ContextHeader(BY_CODE[code].name, quality, w, h, tuple(boxes[:4]), tuple(boxes[4:]))


def decode(payload: bytes) -> tuple[ContextPicture, ContextHeader]:
    """The picture a context payload holds, and its header."""
    from facecodec.image_codecs import image_codec

    h = read_header(payload)
    image = image_codec(h.codec).decode(bytes(payload)[HEADER.size:], (h.height, h.width))
    return ContextPicture(image, h.face_box, h.region), h
