"""The PyTorch networks of the reconstruction (paper 3.2), for training and conversion only.

The services run these networks converted (``python -m train runtime-models``: the display network to
ONNX, the ridge head to ``.npz``) by :mod:`facecodec.reconstruction`, without PyTorch.

``FeatureToFace`` follows the paper's Fig. 1: a fully connected projection of the decoded feature to a
7x7 map, then DconvOps (transposed convolution, batch normalisation, ReLU) that double the resolution
up to the 112x112 crop of :mod:`facecodec.crop`, and Tanh after the last layer. One change: the last
layer adds a learned per-pixel bias initialised to the mean training face (in Tanh's input space), so
training starts from the mean-face floor instead of grey. ``FaceDecoder`` (config type ``upconv``) is
the second display network: the same projection to 7x7, then four blocks of nearest-neighbour
upsampling, a 3x3 convolution, batch normalisation and ReLU (no transposed convolutions, so no
checkerboard), a 3x3 convolution to RGB, the mean-face bias and Tanh; it is trained with an identity
term through dlib's descriptor (:mod:`train.reconstruction`). ``LinearFace`` is the prediction head:
one linear map from the standardised feature to the pixels plus the mean face.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facecodec.crop import CROP


class DconvOp(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Decoder(nn.Module):
    """Feature -> 112x112 face: a projection to ``base`` channels at 7x7, ``blocks`` that halve the channels
    and double the resolution, ``last`` to RGB, plus a per-pixel bias (the mean face) and Tanh."""

    def __init__(self, dim: int, base: int, chans: list[int], block, last: nn.Module) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        self.project = nn.Sequential(nn.Linear(dim, base * 7 * 7, bias=False), nn.BatchNorm1d(base * 7 * 7),
                                     nn.ReLU(inplace=True))
        self.ops = nn.Sequential(*[block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.last = last
        self.face_bias = nn.Parameter(torch.zeros(3, CROP, CROP))
        self.base = base
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(self.last.bias)
        self.last.weight.data.mul_(0.1)

    def forward(self, f):
        x = self.project((f - self.feat_mean) / self.feat_std).view(-1, self.base, 7, 7)
        return torch.tanh(self.last(self.ops(x)) + self.face_bias)


class FeatureToFace(_Decoder):
    """The display network of the paper's Fig. 1; ``base`` channels at 7x7, halved at each doubling."""

    def __init__(self, dim: int = 128, base: int = 128) -> None:
        chans = [base, base // 2, base // 4, base // 8]
        super().__init__(dim, base, chans, DconvOp, nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1))


class UpBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FaceDecoder(_Decoder):
    """The display network trained for identity: ``base`` channels at 7x7, halved at each doubling."""

    def __init__(self, dim: int = 128, base: int = 256) -> None:
        chans = [base, base // 2, base // 4, base // 8, base // 16]
        super().__init__(dim, base, chans, UpBlock, nn.Conv2d(chans[-1], 3, 3, 1, 1))


class LinearFace(nn.Module):
    """The prediction head: standardised feature -> pixels by one linear map plus the mean face."""

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        self.map = nn.Linear(dim, 3 * CROP * CROP)  # bias = mean face, both in pixel levels

    def forward(self, f):
        x = self.map((f - self.feat_mean) / self.feat_std).view(-1, CROP, CROP, 3).permute(0, 3, 1, 2)
        return x / 127.5 - 1


class Restorer(nn.Module):
    """The enhancement layer's restoration network (:mod:`facecodec.restoration`): a small U-Net from
    the decoded face, the base layer's prediction, the quality and the mode (8 planes in [0, 1]) to the
    restored face, as the decoded face plus a correction. Two stride-2 stages (112 -> 56 -> 28) give a
    receptive field that covers a codec block and its neighbours; the last convolution starts at zero,
    so an untrained network is the identity."""

    def __init__(self, width: int = 32, planes: int = 8, blocks: int = 1) -> None:
        super().__init__()
        c1, c2, c3 = width, width * 3 // 2, width * 2

        def conv(a, b, stride=1):
            return nn.Conv2d(a, b, 3, stride, 1)

        self.inp = nn.Sequential(conv(planes, c1), nn.ReLU(inplace=True))
        self.down1 = nn.Sequential(conv(c1, c2, 2), nn.ReLU(inplace=True))
        self.down2 = nn.Sequential(conv(c2, c3, 2), nn.ReLU(inplace=True))
        self.mid = nn.Sequential(conv(c3, c3), nn.ReLU(inplace=True), conv(c3, c3))
        # further residual blocks at the coarsest stage (``blocks`` - 1 of them): wider context, little cost
        self.more = nn.ModuleList(nn.Sequential(nn.ReLU(inplace=False), conv(c3, c3), nn.ReLU(inplace=True), conv(c3, c3))
                                  for _ in range(blocks - 1))
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(c3, c2), nn.ReLU(inplace=True))
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(c2, c1), nn.ReLU(inplace=True))
        self.out = conv(c1, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        a = self.inp(x)
        b = self.down1(a)
        c = self.down2(b)
        c = c + self.mid(c)
        for block in self.more:
            c = c + block(c)
        b = b + self.up2(c)
        a = a + self.up1(b)
        return x[:, :3] + self.out(a)


def build(config: dict) -> nn.Module:
    """The network a registry file's ``config`` describes."""
    config = dict(config)
    kind = config.pop("type", "dconv")
    if kind == "linear":
        return LinearFace(**config)
    if kind == "upconv":
        return FaceDecoder(**config)
    return FeatureToFace(**config)


def to_image(t) -> np.ndarray:
    """Network output in [-1, 1] (N,3,H,W) to uint8 images (N,H,W,3)."""
    x = ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(0, 2, 3, 1).cpu().numpy()


def to_tensor(images: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def load_state(path) -> tuple[dict, dict]:
    """``config`` and float32 state of a PyTorch reconstruction file (as ``--export`` wrote them)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob["config"], {k: v.float() for k, v in blob["state"].items()}
