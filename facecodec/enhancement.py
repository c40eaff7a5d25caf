"""The enhancement layer: the face coded against its base-layer prediction (paper 3.3), and restored.

Format 3 (what encoders write for the conventional codecs) codes, per face, whichever of two images
costs less at the asked quality (:func:`choose`):

- **residual** mode: ``x_resi = x - x_fea`` mapped onto 8 bits around 128 by its largest magnitude
  (``span``: ``x_tex = 128 + round(127 * x_resi / span)``; paper eq. 4 maps min..max instead, and
  spends four header bytes on them), decoded as ``clip(x_fea + (x_rec - 128) * span / 127)``;
- **direct** mode: the crop itself, as an anchor codec would code it.

``x_fea`` is the reconstruction's prediction head applied to the decoded base layer
(:mod:`facecodec.reconstruction`). When a restoration network is registered for the codec
(:mod:`facecodec.restoration`), the decoder then runs it on the decoded face, given ``x_fea``, the
quality and the mode: the base layer's knowledge of the person also sharpens what the image codec
blurred. The encoder runs it too and names it in the header only for the faces it improves (the same
stream either way, so the choice costs no byte). A payload names every model it needs by registry tag,
so it decodes the same way after newer models are registered.

Format 3 header (6 bytes in direct mode, 7 in residual mode)::

    0     0xE0 | 3
    1     image codec code (bits 7-4) | mode (bit 3: 0 residual, 1 direct) | header dictionary tag (bits 2-0)
    2     quality
    3     predictor tag: 0 = none, else the reconstruction model that made x_fea
    4     restoration tag: 0 = none, else the restoration network run after the image decoder
    5     span, 1-255 (residual mode only)
    +0    CRC-8 of every other byte of the payload
    ...   image codec stream (its container header deflated against the dictionary when its tag is set)

Formats 2 and 1 (still decoded; format 2 is still written for the learned codecs, whose networks were
trained on its normalisation) code ``x_tex``, the residual min-max normalised to [0, 255] per image
(equation 4; min and max travel in the payload), decoded as ``clip(x_fea + denormalise(x_rec))``. The
``conditional`` learned codec instead codes the crop itself with ``x_fea`` given to its encoder and
decoder (min 0, max 255 in the header; the quality byte is its rate point)::

    0     0xE0 | version
    1     image codec code (facecodec.image_codecs)
    2     predictor tag: 0 = none, else the reconstruction model's registry tag
    3     quality
    4-5   residual minimum (int16, big endian)
    6-7   residual maximum (int16, big endian)
    8     header dictionary tag (format 2 only): 0 = the image stream is a plain file, else its container
          header is deflated against that registered dictionary (facecodec.headers)
    +0-1  CRC-16/CCITT of every other byte
    ...   image codec stream of the 112x112 normalised residual
"""

from __future__ import annotations

import binascii
import dataclasses
import struct
from dataclasses import dataclass

import numpy as np

from facecodec.crop import CROP, face_crop
from facecodec.errors import CorruptPayloadError, TruncatedPayloadError, UnknownFormatError, UnknownModelError
from facecodec.image_codecs import BY_CODE, ImageCodec, LearnedCodec, image_codec

MAGIC = 0xE0
VERSION = 3  # what encode() writes for the conventional codecs
VERSIONS = (1, 2, 3)  # what decode() reads
HEADERS = {1: struct.Struct(">BBBBhhH"), 2: struct.Struct(">BBBBhhBH")}  # the fixed layouts of formats 1 and 2
HEADER = HEADERS[2]  # format 2, still written for the learned codecs (and by bench/fuzzing's hand-made payloads)
MAX_BODY = 1 << 20
RESIDUAL, DIRECT = "residual", "direct"
KAPPA = 1.5  # the choice's rate exponent: image codecs here lose about 1.5x in log MSE what they save in log bytes
_EPS = 1e-3  # MSE floor of the choice (a lossless mode has MSE 0)


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
    mode: str = RESIDUAL
    restoration_tag: int = 0
    span: int = 0  # format 3, residual mode


def prediction(base_payload: bytes | None, tag: int | None = None) -> tuple[int, np.ndarray]:
    """(predictor tag, x_fea as int16 112x112x3) for a base layer; zeros without a model.

    The encoder picks the newest prediction head's tag (``reconstruction.default_name("prediction")``)
    unless ``tag`` names one, and then computes ``x_fea`` exactly as the decoder will, from that tag
    (:func:`_prediction_for_tag`)."""
    from facecodec import reconstruction, zoo

    if base_payload is None or not zoo.entries(reconstruction.KIND):
        return 0, np.zeros((CROP, CROP, 3), np.int16)
    if tag is None:
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
    """``x_tex`` of equation (4) as uint8 in [0, 255], with the per-image minimum and maximum (formats 1, 2)."""
    lo, hi = int(resi.min()), int(resi.max())
    span = max(hi - lo, 1)
    return np.rint((resi - lo) * (255.0 / span)).astype(np.uint8), lo, hi


def centre(resi: np.ndarray) -> tuple[np.ndarray, int]:
    """Format 3's residual image: ``128 + round(127 * resi / span)`` with ``span`` its largest magnitude."""
    span = int(min(max(np.abs(resi).max(), 1), 255))
    return np.clip(np.rint(resi * (127.0 / span)) + 128, 0, 255).astype(np.uint8), span


def uncentre(tex: np.ndarray, span: int, pred: np.ndarray) -> np.ndarray:
    """The face from format 3's decoded residual image and its prediction."""
    resi = (tex.astype(np.float64) - 128) * (span / 127.0)
    return np.clip(np.rint(pred + resi), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Coded:
    """One candidate of format 3: the image stream and the face the decoder will see."""

    mode: str
    stream: bytes
    span: int
    face: np.ndarray


def code(x: np.ndarray, pred: np.ndarray, mode: str, coder: ImageCodec, quality: int) -> Coded:
    """Code the crop ``x`` (uint8) in ``mode`` with ``coder``, and decode it as the decoder will before
    any restoration."""
    if mode == RESIDUAL:
        tex, span = centre(x.astype(np.int16) - pred)
    else:
        tex, span = x, 0
    stream = coder.encode(tex, quality)
    face = _faces(coder.decode(stream, (CROP, CROP)), mode, span, pred)
    return Coded(mode, stream, span, face)


def _faces(tex: np.ndarray, mode: str, span: int, pred: np.ndarray) -> np.ndarray:
    return uncentre(tex, span, pred) if mode == RESIDUAL else tex


def choose(x: np.ndarray, candidates: list[tuple[Coded, int]]) -> int:
    """Index of the ``(candidate, bytes)`` with the smallest ``ln(MSE) + KAPPA * ln(bytes)``, bytes being
    everything that travels for it (base layer, header, stream): a per-face rate-distortion choice that
    needs no lambda per codec or quality, because the slope of log MSE against log bytes is about the
    same for every codec here (1.3-1.8 for AVIF from its lowest to its highest quality on train people;
    1.5 chosen there)."""
    xf = x.astype(np.float64)

    def cost(k: int) -> float:
        c, n = candidates[k]
        mse = float(np.mean((c.face.astype(np.float64) - xf) ** 2))
        return float(np.log(mse + _EPS) + KAPPA * np.log(n))

    return min(range(len(candidates)), key=cost)


def encode(chip: np.ndarray, base_payload: bytes | None, codec: str = "jpeg", quality: int = 75,
           compact: bool = True, mode: str = "auto", version: int | None = None, restore: bool = True) -> bytes:
    """Enhancement payload for the face ``chip`` (150x150 aligned chip or 112x112 crop).

    Conventional codecs write format 3 (``version=2`` writes the previous format): ``mode`` is
    ``residual``, ``direct`` or ``auto`` (both coded, :func:`choose` keeps one; residual needs a base
    layer); ``restore=False`` leaves out the restoration network. The learned codecs write format 2.
    ``compact`` deflates the image stream's container
    header against the newest registered header dictionary (when there is one)."""
    from facecodec import headers

    x = face_crop(chip)
    coder = image_codec(codec)
    if not 0 <= quality <= 100:
        raise ValueError(f"quality {quality} is outside 0-100")
    if mode not in ("auto", RESIDUAL, DIRECT):
        raise ValueError(f"mode {mode!r} is not auto, {RESIDUAL} or {DIRECT}")
    version = version or (2 if isinstance(coder, LearnedCodec) else VERSION)
    dtag = headers.default_tag() if compact and isinstance(coder, ImageCodec) else 0
    if version == 2:
        return _encode_v2(x, base_payload, coder, quality, dtag)
    if version != VERSION or isinstance(coder, LearnedCodec):
        raise ValueError(f"format {version} cannot be written for {codec}")
    if dtag > 7:
        raise UnknownModelError(f"header dictionary tag {dtag} does not fit format 3's three bits")
    from facecodec import restoration

    restorer = restoration.for_codec(codec) if base_payload is not None and restore else None
    ptag, pred = prediction(base_payload, restorer.predictor_tag if restorer else None)
    if not ptag:
        restorer = None
    modes = [DIRECT] if not ptag or mode == DIRECT else [RESIDUAL] if mode == RESIDUAL else [RESIDUAL, DIRECT]
    # Each mode's stream, decoded as is and, with a restoration network, restored too: the same bytes
    # either way, so the choice keeps the restoration only for the faces it improves (its tag says so).
    coded = [code(x, pred, m, coder, quality) for m in modes]
    bodies = [headers.compact(coder.name, c.stream, headers.dictionary(dtag)) if dtag else c.stream for c in coded]
    candidates = [(c, b, 0) for c, b in zip(coded, bodies)]
    if restorer is not None:
        candidates += [(dataclasses.replace(c, face=restorer(c.face, pred, quality, c.mode)), b, restorer.tag)
                       for c, b in zip(coded, bodies)]
    k = choose(x, [(c, len(b) + len(base_payload or b"") + 7) for c, b, _ in candidates])
    best, body, rtag = candidates[k]
    if best.mode == DIRECT and not rtag:
        ptag = 0  # nothing of the base layer is used: the layer decodes without it
    head = bytes([MAGIC | 3, coder.code << 4 | (8 if best.mode == DIRECT else 0) | dtag, quality, ptag,
                  rtag]) + (bytes([best.span]) if best.mode == RESIDUAL else b"")
    return head + bytes([_crc8(head + body)]) + body


def _encode_v2(x: np.ndarray, base_payload: bytes | None, coder, quality: int, dtag: int) -> bytes:
    from facecodec import headers

    x = x.astype(np.int16)
    tag, pred = prediction(base_payload)
    if coder.conditional:  # codes the crop itself, given x_fea
        lo, hi = 0, 255
        body = coder.encode(x.astype(np.uint8), quality, context=pred)
    else:
        tex, lo, hi = normalise(x - pred)
        body = coder.encode(tex, quality)
    if dtag:
        body = headers.compact(coder.name, body, headers.dictionary(dtag))
    head = HEADER.pack(MAGIC | 2, coder.code, tag, quality, lo, hi, dtag, 0)[:-2]
    return head + binascii.crc_hqx(head + body, 0xFFFF).to_bytes(2, "big") + body


def _crc8(data: bytes) -> int:
    from facecodec.base_layer import _crc8 as crc8  # the base layer's CRC-8 (polynomial 0x07)

    return crc8(data)


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
    if version not in VERSIONS:
        raise UnknownFormatError(f"enhancement format version {version} is not supported (this decoder reads "
                                 f"{', '.join(map(str, VERSIONS))})")
    if version == 3:
        return _read_header_v3(payload)
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


def _read_header_v3(payload: bytes) -> EnhancementHeader:
    if len(payload) < 7:
        raise TruncatedPayloadError(f"enhancement payload of {len(payload)} bytes is shorter than its header")
    code, mode, dtag = payload[1] >> 4, DIRECT if payload[1] & 8 else RESIDUAL, payload[1] & 7
    quality, ptag, rtag = payload[2], payload[3], payload[4]
    size = 6 if mode == DIRECT else 7
    if len(payload) < size + 1:
        raise TruncatedPayloadError(f"enhancement payload of {len(payload)} bytes is shorter than its header")
    span = payload[5] if mode == RESIDUAL else 0
    coder = BY_CODE.get(code)
    if coder is None:
        raise UnknownFormatError(f"unknown image codec code {code}")
    if isinstance(coder, LearnedCodec) or quality > 100 or (mode == RESIDUAL and span == 0):
        raise CorruptPayloadError("enhancement header values out of range")
    if len(payload) - size > MAX_BODY:
        raise CorruptPayloadError("enhancement body is larger than any 112x112 image needs")
    if _crc8(payload[: size - 1] + payload[size:]) != payload[size - 1]:
        raise CorruptPayloadError("enhancement checksum mismatch: the payload is truncated or corrupted")
    lo, hi = (-span, span) if mode == RESIDUAL else (0, 255)
    return EnhancementHeader(3, coder.name, ptag, quality, lo, hi, dtag, size, mode, rtag, span)


def decode(payload: bytes, base_payload: bytes | None) -> np.ndarray:
    """The full-fidelity 112x112 face."""
    h = read_header(payload)
    if h.predictor_tag and base_payload is None:
        raise UnknownModelError("this enhancement layer needs its base layer to decode")
    body = bytes(payload)[h.size :]
    if h.dictionary_tag:
        from facecodec import headers

        body = headers.expand(body, headers.dictionary(h.dictionary_tag))
    coder = image_codec(h.codec)
    pred = _prediction_for_tag(h.predictor_tag, base_payload)
    if h.version == 3:
        face = _faces(coder.decode(body, (CROP, CROP)), h.mode, h.span, pred)
        if h.restoration_tag:
            from facecodec import restoration

            face = restoration.by_tag(h.restoration_tag)(face, pred, h.quality, h.mode)
        return face
    if isinstance(coder, LearnedCodec):
        out = coder.decode(body, (CROP, CROP), context=pred, quality=h.quality)
        if coder.conditional:
            return out
        tex = out.astype(np.float64)
    else:
        tex = coder.decode(body, (CROP, CROP)).astype(np.float64)
    resi = tex * (max(h.hi - h.lo, 1) / 255.0) + h.lo
    return np.clip(np.rint(pred + resi), 0, 255).astype(np.uint8)
