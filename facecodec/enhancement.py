"""The enhancement layer: the residual between the face and its base-layer prediction (paper 3.3).

``x_resi = x - x_fea`` is min-max normalised to ``x_tex`` in [0, 255] per image (equation 4;
min and max travel in the payload, so the decoder never needs batch statistics), coded with an
image codec, and decoded as ``clip(x_fea + denormalise(x_rec))``. The ``conditional`` learned
codec instead codes the crop itself with ``x_fea`` given to its encoder and decoder (min 0,
max 255 in the header; the quality byte is its rate point). ``x_fea`` is the
reconstruction's prediction head applied to the decoded base layer (:mod:`facecodec.reconstruction`); when no reconstruction model is
registered the prediction is zero and the layer codes the crop directly (predictor tag 0).

Payload (format version 2; version 1, without byte 8, is still decoded)::

    0     0xE0 | version
    1     image codec code (facecodec.image_codecs)
    2     predictor tag: 0 = none, else the reconstruction model's registry tag
    3     quality
    4-5   residual minimum (int16, big endian)
    6-7   residual maximum (int16, big endian)
    8     header dictionary tag: 0 = the image stream is a plain file, else its container
          header is deflated against that registered dictionary (facecodec.headers)
    9-10  CRC-16/CCITT of every other byte
    11-   image codec stream of the 112x112 normalised residual
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

import numpy as np

from facecodec.crop import CROP, face_crop
from facecodec.errors import CorruptPayloadError, TruncatedPayloadError, UnknownFormatError, UnknownModelError
from facecodec.image_codecs import BY_CODE, ImageCodec, LearnedCodec, image_codec

MAGIC = 0xE0
VERSION = 2
HEADERS = {1: struct.Struct(">BBBBhhH"), 2: struct.Struct(">BBBBhhBH")}
HEADER = HEADERS[VERSION]
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class EnhancementHeader:
    version: int
    codec: str
    predictor_tag: int
    quality: int
    lo: int
    hi: int
    dictionary_tag: int = 0
    size: int = HEADER.size


def prediction(base_payload: bytes | None) -> tuple[int, np.ndarray]:
    """(predictor tag, x_fea as int16 112x112x3) for a base layer; zeros without a model.

    The encoder picks the newest prediction head's tag (``reconstruction.default_name("prediction")``)
    and then computes ``x_fea``
    exactly as the decoder will, from that tag (:func:`_prediction_for_tag`)."""
    from facecodec import reconstruction, zoo

    if base_payload is None or not zoo.entries(reconstruction.KIND):
        return 0, np.zeros((CROP, CROP, 3), np.int16)
    name = reconstruction.default_name("prediction")
    tag = zoo.entry(name).tag
    if not tag:  # a payload must name its predictor, or the decoder would add the wrong one
        raise UnknownModelError(f"reconstruction model {name} has no registry tag")
    return tag, _prediction_for_tag(tag, base_payload)


def _prediction_for_tag(tag: int, base_payload: bytes) -> np.ndarray:
    """``x_fea`` of the reconstruction network registered with ``tag`` (zeros for tag 0)."""
    from facecodec import reconstruction, zoo

    if tag == 0:
        return np.zeros((CROP, CROP, 3), np.int16)
    for e in zoo.entries(reconstruction.KIND):
        if e.tag == tag:
            from facecodec import base_layer

            feature = base_layer.decode(base_payload).feature
            return reconstruction.load_reconstructor(e.name)(feature)[0].astype(np.int16)
    raise UnknownModelError(f"enhancement layer predicted by reconstruction model tag {tag}, which is not registered")


def normalise(resi: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``x_tex`` of equation (4) as uint8 in [0, 255], with the per-image minimum and maximum."""
    lo, hi = int(resi.min()), int(resi.max())
    span = max(hi - lo, 1)
    return np.rint((resi - lo) * (255.0 / span)).astype(np.uint8), lo, hi


def encode(chip: np.ndarray, base_payload: bytes | None, codec: str = "jpeg", quality: int = 75,
           compact: bool = True) -> bytes:
    """Enhancement payload for the face ``chip`` (150x150 aligned chip or 112x112 crop).

    ``compact`` deflates the image stream's container header against the newest registered
    header dictionary (when there is one)."""
    from facecodec import headers

    x = face_crop(chip).astype(np.int16)
    coder = image_codec(codec)
    if not 0 <= quality <= 100:
        raise ValueError(f"quality {quality} is outside 0-100")
    tag, pred = prediction(base_payload)
    if coder.conditional:  # codes the crop itself, given x_fea
        lo, hi = 0, 255
        body = coder.encode(x.astype(np.uint8), quality, context=pred)
    else:
        tex, lo, hi = normalise(x - pred)
        body = coder.encode(tex, quality)
    dtag = headers.default_tag() if compact and isinstance(coder, ImageCodec) else 0
    if dtag:
        body = headers.compact(coder.name, body, headers.dictionary(dtag))
    head = HEADER.pack(MAGIC | VERSION, coder.code, tag, quality, lo, hi, dtag, 0)[:-2]
    return head + binascii.crc_hqx(head + body, 0xFFFF).to_bytes(2, "big") + body


def read_header(payload: bytes) -> EnhancementHeader:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise UnknownFormatError(f"an enhancement payload is bytes, not {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) < 1:
        raise TruncatedPayloadError("empty enhancement payload")
    magic = payload[0]
    if magic & 0xF0 != MAGIC:
        raise UnknownFormatError(f"not an enhancement payload (first byte 0x{magic:02x})")
    version = magic & 0x0F
    if version not in HEADERS:
        raise UnknownFormatError(f"enhancement format version {version} is not supported (this decoder reads 1 and 2)")
    fmt = HEADERS[version]
    if len(payload) < fmt.size + 1:
        raise TruncatedPayloadError(f"enhancement payload of {len(payload)} bytes is shorter than its header")
    fields = fmt.unpack_from(payload)
    code, tag, quality, lo, hi = fields[1:6]
    dtag, crc = (fields[6], fields[7]) if version == 2 else (0, fields[6])
    if code not in BY_CODE:
        raise UnknownFormatError(f"unknown image codec code {code}")
    if not (-255 <= lo <= hi <= 255) or quality > 100:
        raise CorruptPayloadError("enhancement header values out of range")
    if len(payload) - fmt.size > MAX_BODY:
        raise CorruptPayloadError("enhancement body is larger than any 112x112 image needs")
    if binascii.crc_hqx(payload[: fmt.size - 2] + payload[fmt.size :], 0xFFFF) != crc:
        raise CorruptPayloadError("enhancement checksum mismatch: the payload is truncated or corrupted")
    return EnhancementHeader(version, BY_CODE[code].name, tag, quality, lo, hi, dtag, fmt.size)


def decode(payload: bytes, base_payload: bytes | None) -> np.ndarray:
    """The full-fidelity 112x112 face: ``clip(x_fea + denormalised(x_rec))``."""
    h = read_header(payload)
    if h.predictor_tag and base_payload is None:
        raise UnknownModelError("this enhancement layer needs its base layer to decode")
    body = bytes(payload)[h.size :]
    if h.dictionary_tag:
        from facecodec import headers

        body = headers.expand(body, headers.dictionary(h.dictionary_tag))
    coder = image_codec(h.codec)
    pred = _prediction_for_tag(h.predictor_tag, base_payload)
    if isinstance(coder, LearnedCodec):
        out = coder.decode(body, (CROP, CROP), context=pred, quality=h.quality)
        if coder.conditional:
            return out
        tex = out.astype(np.float64)
    else:
        tex = coder.decode(body, (CROP, CROP)).astype(np.float64)
    resi = tex * (max(h.hi - h.lo, 1) / 255.0) + h.lo
    return np.clip(np.rint(pred + resi), 0, 255).astype(np.uint8)
