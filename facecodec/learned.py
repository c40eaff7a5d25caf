"""Learned enhancement-layer codecs (paper 3.3): Balle et al.'s factorized prior with GDN.

Two variants, each a ladder of rate points registered in the model zoo (tag = quality 1..n):

- ``residual`` (kind ``learned-codec``): compressai's ``FactorizedPrior`` (N = M = 128, the
  paper's 128 channels) coding the normalised residual ``x_tex``, exactly where the paper puts
  JPEG or JPEG 2000. It is the image codec ``learned`` of :mod:`facecodec.image_codecs`.
- ``conditional`` (kind ``conditional-codec``, beyond the paper): the reconstruction ``x_fea``
  is an input of both transforms. The analysis transform sees ``[x, x_fea]``; the synthesis
  output is fused with ``x_fea`` by two 3x3 convolutions and added to it. It codes the crop
  itself, so it has no min-max normalisation.

The latents of a 112x112 image are 128x7x7; the stream is the entropy coder's bytes alone (the
enhancement payload's header names the codec, the quality and the image size). The entropy
model's tables ship inside the weights file, so encoder and decoder never rebuild them from
floating point.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from compressai.layers import GDN
from compressai.models import FactorizedPrior
from compressai.models.utils import conv, deconv
from torch import nn

from facecodec.errors import CorruptPayloadError, ImageError, UnknownModelError

CHANNELS = 128
KINDS = {"residual": "learned-codec", "conditional": "conditional-codec"}  # variant -> registry kind
PREFIX = {"residual": "learned-fp128", "conditional": "cond-fp128"}
STRIDE = 16
MAX_STREAM = 1 << 16  # bytes; a 112x112 face at the highest rate point needs a few KB


def is_table(name: str) -> bool:
    """Entropy-model parameters and tables: kept at full precision in shipped files."""
    return "entropy_bottleneck" in name


class ConditionalFactorizedPrior(FactorizedPrior):
    """Factorized prior whose transforms both see the base layer's reconstruction."""

    def __init__(self, n: int, m: int, fused: int = 32):
        super().__init__(n, m)
        self.g_a = nn.Sequential(conv(6, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m))
        self.g_s = nn.Sequential(deconv(m, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
                                 deconv(n, n), GDN(n, inverse=True), deconv(n, fused))
        self.fuse = nn.Sequential(nn.Conv2d(fused + 3, fused, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(fused, 3, 3, padding=1))

    def _synth(self, y_hat, ctx):
        return ctx + self.fuse(torch.cat([self.g_s(y_hat), ctx], 1))

    def forward(self, x, ctx):
        y = self.g_a(torch.cat([x, ctx], 1))
        y_hat, y_likelihoods = self.entropy_bottleneck(y)
        return {"x_hat": self._synth(y_hat, ctx), "likelihoods": {"y": y_likelihoods}}

    def compress(self, x, ctx):
        y = self.g_a(torch.cat([x, ctx], 1))
        return {"strings": [self.entropy_bottleneck.compress(y)], "shape": y.size()[-2:]}

    def decompress(self, strings, shape, ctx):
        y_hat = self.entropy_bottleneck.decompress(strings[0], shape)
        return {"x_hat": self._synth(y_hat, ctx).clamp_(0, 1)}


def build(variant: str):
    """An untrained network of ``variant`` (``residual`` or ``conditional``)."""
    if variant == "residual":
        return FactorizedPrior(CHANNELS, CHANNELS)
    if variant != "conditional":
        raise UnknownModelError(f"unknown learned codec variant {variant!r} (residual, conditional)")
    return ConditionalFactorizedPrior(CHANNELS, CHANNELS)


def _tensor(image: np.ndarray):
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected an RGB uint8 image, got {getattr(image, 'shape', type(image))}")
    if image.shape[0] % STRIDE or image.shape[1] % STRIDE:
        raise ImageError(f"learned codecs code sides that are multiples of {STRIDE}, got {image.shape[1]}x{image.shape[0]}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def encode_stream(net, image: np.ndarray, context: np.ndarray | None = None) -> bytes:
    """The entropy-coded latents of ``image`` (uint8 HxWx3) under ``net``."""
    with torch.no_grad():
        x = _tensor(image)
        out = net.compress(x) if context is None else net.compress(x, _tensor(context))
    return out["strings"][0][0]


def decode_stream(net, stream: bytes, context: np.ndarray | None = None, shape: tuple[int, int] = (112, 112)) -> np.ndarray:
    """The uint8 HxWx3 image that ``stream`` codes; :class:`CorruptPayloadError` if it cannot."""
    latent = (shape[0] // STRIDE, shape[1] // STRIDE)
    if not stream:
        raise CorruptPayloadError("empty learned-codec stream")
    if len(stream) > MAX_STREAM:
        raise CorruptPayloadError(f"learned-codec stream of {len(stream)} bytes is larger than any face needs")
    try:
        with torch.no_grad():
            padded = [[_padded(stream)]]
            out = net.decompress(padded, latent) if context is None else net.decompress(padded, latent, _tensor(context))
    except Exception as e:  # the entropy decoder rejects some garbage streams with assorted errors
        raise CorruptPayloadError(f"learned-codec stream does not decode: {e}") from e
    x = np.nan_to_num(out["x_hat"][0].permute(1, 2, 0).numpy(), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _padded(stream: bytes) -> bytes:
    """The stream followed by zeros. compressai's rANS decoder reads past the end of a stream
    that is not its own (a segfault on random bytes, measured); every decode step reads at most
    one 32-bit word and a garbage stream can ask for at most ~15 bypass nibbles per byte, so
    16 x its length plus 64 KiB of zeros keeps every read inside the buffer. Valid streams never
    reach the padding."""
    return bytes(stream) + bytes(16 * len(stream) + 65536)


def qualities(variant: str = "residual") -> tuple[int, ...]:
    """The registered rate points (1 = lowest rate) of ``variant``."""
    from facecodec import zoo

    return tuple(sorted(e.tag for e in zoo.entries(KINDS[variant]) if e.tag))


@lru_cache(maxsize=16)
def load(variant: str, quality: int):
    """The network registered for ``variant`` at rate point ``quality`` (cached, eval mode)."""
    from facecodec import zoo

    found = [e for e in zoo.entries(KINDS[variant]) if e.tag == quality]
    if not found:
        raise UnknownModelError(f"no {variant} learned codec at quality {quality} (registered: {list(qualities(variant))})")
    # weights_only: a model file (FACECODEC_MODEL_DIR may supply one) is data, never code to unpickle.
    blob = torch.load(zoo.model_path(found[0].name), map_location="cpu", weights_only=True)
    net = build(variant)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
    return net.eval()
