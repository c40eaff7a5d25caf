"""Conventional image codecs behind one contract, chosen by name (Pillow; OpenJPEG for JPEG 2000).

They code the enhancement layer's normalised residual (paper 3.3) and, in the evaluation, the
plain face crop (compress-then-analyze anchors). ``learned`` (Balle et al.'s factorized prior
trained on residuals) and ``conditional`` (a learned codec that sees the base layer's
reconstruction) come from the model zoo through the same contract. ``quality`` is the codec's own knob:
JPEG 1-95, WebP and AVIF 0-100, JPEG 2000 the target PSNR in dB of its single layer; PNG is
lossless and ignores it.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from facecodec.errors import CorruptPayloadError, FaceCodecError


@dataclass(frozen=True)
class ImageCodec:
    name: str
    code: int
    qualities: tuple[int, ...]
    save: Callable[..., None]  # (PIL image, buffer, quality, **options)
    options: tuple[tuple[str, object], ...] = ()  # encoder settings beyond quality, as (name, value)
    conditional: ClassVar[bool] = False  # codes a residual; see LearnedCodec

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        self.save(Image.fromarray(np.ascontiguousarray(image)), buf, int(quality), **dict(self.options))
        return buf.getvalue()

    def with_options(self, **options) -> ImageCodec:
        """This codec with other encoder settings (``speed=3`` for AVIF, say): same name, code and
        decoder, so what it writes reads back like any stream of this codec."""
        return dataclasses.replace(self, options=tuple(sorted({**dict(self.options), **options}.items())))

    def decode(self, data: bytes, shape: tuple[int, int] | None = None) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                # The header's size is checked before any pixel is decoded: a small stream may
                # declare a huge image (a 78 kB PNG of 9000x9000 took 1 GB and 4 s to refuse).
                if shape is not None and im.size != (shape[1], shape[0]):
                    raise CorruptPayloadError(f"{self.name} stream declares {im.size[0]}x{im.size[1]}, "
                                              f"expected {shape[1]}x{shape[0]}")
                im.load()
                out = np.asarray(im.convert("RGB"))
        except CorruptPayloadError:
            raise
        except Exception as e:  # Pillow raises many types on bad streams
            raise CorruptPayloadError(f"{self.name} stream does not decode: {e}") from e
        if shape is not None and out.shape[:2] != tuple(shape):
            raise CorruptPayloadError(f"{self.name} stream decodes to {out.shape[1]}x{out.shape[0]}, expected {shape[1]}x{shape[0]}")
        return out


def _jpeg(im, buf, q):
    im.save(buf, "JPEG", quality=max(1, min(q, 95)), optimize=True)


def _jpeg2000(im, buf, q):
    im.save(buf, "JPEG2000", quality_mode="dB", quality_layers=[float(q)], irreversible=True)


def _webp(im, buf, q):
    im.save(buf, "WEBP", quality=max(0, min(q, 100)), method=6)


def _avif(im, buf, q, speed: int = 6, subsampling: str = "4:2:0", tune: str | None = None):
    # Speed 6 of libaom's 0-10. Speed 3 makes AVIF of a face 6.6% smaller at equal PSNR, the enhancement
    # layer only 4.1% (every byte counted), for 7x the encode time; tune=psnr and 4:4:4 do no better
    # (`python -m eval avif-settings`, eval/results/avif_settings.json).
    advanced = {"tune": tune} if tune else None
    im.save(buf, "AVIF", quality=max(0, min(q, 100)), speed=speed, subsampling=subsampling, advanced=advanced)


def _png(im, buf, q):
    im.save(buf, "PNG", optimize=True)


def _learned():
    """:mod:`facecodec.learned`, or a clear error where PyTorch and CompressAI are not installed (the
    services' images have neither: the learned codecs are experimental, see their model card)."""
    try:
        from facecodec import learned
    except ImportError as e:
        raise FaceCodecError(f"the learned codecs need PyTorch and CompressAI ({e}); install requirements-dev.txt "
                             "(or the facecodec[train] extra)") from e
    return learned


class LearnedCodec:
    """A learned codec of the model zoo (:mod:`facecodec.learned`) behind the same contract.

    ``quality`` is the registered rate point (1 = lowest rate). A ``conditional`` codec codes
    the crop itself given the base layer's reconstruction as ``context``, which the
    enhancement layer passes to both ``encode`` and ``decode``."""

    def __init__(self, name: str, code: int, variant: str):
        self.name, self.code, self.variant = name, code, variant
        self.conditional = variant == "conditional"

    @property
    def qualities(self) -> tuple[int, ...]:
        learned = _learned()

        return learned.qualities(self.variant)

    def encode(self, image: np.ndarray, quality: int, context: np.ndarray | None = None) -> bytes:
        learned = _learned()

        return learned.encode_stream(learned.load(self.variant, int(quality)), image, self._context(context, image))

    def decode(self, data: bytes, shape: tuple[int, int] | None = None, context: np.ndarray | None = None,
               quality: int | None = None) -> np.ndarray:
        learned = _learned()

        if quality is None:
            raise CorruptPayloadError(f"a {self.name} stream needs the rate point it was coded at")
        shape = shape or (112, 112)
        return learned.decode_stream(learned.load(self.variant, int(quality)), data, self._context(context, shape),
                                    shape)

    def _context(self, context, like):
        if not self.conditional:
            return None
        if context is None:
            shape = like.shape[:2] if isinstance(like, np.ndarray) else like
            context = np.zeros((*shape, 3), np.uint8)
        return np.clip(context, 0, 255).astype(np.uint8)


CODECS: dict[str, ImageCodec | LearnedCodec] = {c.name: c for c in [
    ImageCodec("jpeg", 1, (5, 10, 20, 30, 40, 50, 60, 70, 80, 90), _jpeg),
    ImageCodec("jpeg2000", 2, (22, 25, 28, 30, 32, 34, 36, 38, 40, 44), _jpeg2000),
    ImageCodec("webp", 3, (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90), _webp),
    ImageCodec("avif", 4, (0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90), _avif),
    ImageCodec("png", 5, (0,), _png),
    LearnedCodec("learned", 6, "residual"),
    LearnedCodec("conditional", 7, "conditional"),
]}
BY_CODE = {c.code: c for c in CODECS.values()}


@contextmanager
def substituted(codec: ImageCodec) -> Iterator[None]:
    """Within the block, :func:`image_codec` of ``codec.name`` (and of its code) is ``codec``, typically
    :meth:`ImageCodec.with_options` of the registered one: how the evaluation measures encoder settings
    through the enhancement layer without a setting of its own. Not thread-safe; one process at a time."""
    before = CODECS[codec.name]
    CODECS[codec.name] = BY_CODE[codec.code] = codec
    try:
        yield
    finally:
        CODECS[codec.name] = BY_CODE[codec.code] = before


def image_codec(name: str) -> ImageCodec | LearnedCodec:
    """The image codec called ``name`` (:class:`FaceCodecError` naming the others if there is none)."""
    try:
        return CODECS[name]
    except KeyError:
        raise FaceCodecError(f"unknown image codec {name!r}; choose one of {sorted(CODECS)}") from None
