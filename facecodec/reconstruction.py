"""Deep feature reconstruction: a de-convolutional network from the base layer to the face (paper 3.2).

The network follows the paper's Fig. 1: a fully connected projection of the decoded feature to
a 7x7 map, then DconvOps (transposed convolution, batch normalisation, ReLU) that double the
resolution up to the 112x112 crop of :mod:`facecodec.crop`, and Tanh after the last layer.
One change: the last layer adds a learned per-pixel bias initialised to the mean training
face (in Tanh's input space), so training starts from the mean-face floor instead of grey.

Two heads, two models (the reconstruction issue allows it): the face an operator sees
(``display``, the de-convolutional network, trained for structure) and the prediction that
leaves the smallest residual for the enhancement layer (``prediction``, a ridge regression
from the feature to the pixels, the MSE-optimal linear map). Each is registered with its head;
:func:`default_name` picks the newest of a head, and the prediction head falls back to the
display model when none is registered.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from facecodec.crop import CROP
from facecodec.errors import UnknownModelError

KIND = "reconstruction"


def build_network(dim: int = 128, base: int = 128):
    """The DconvOp stack; ``base`` channels at 7x7, halved at each doubling."""
    import torch
    from torch import nn

    class DconvOp(nn.Sequential):
        def __init__(self, cin: int, cout: int):
            super().__init__(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class FeatureToFace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("feat_mean", torch.zeros(dim))
            self.register_buffer("feat_std", torch.ones(dim))
            self.project = nn.Sequential(nn.Linear(dim, base * 7 * 7, bias=False), nn.BatchNorm1d(base * 7 * 7), nn.ReLU(inplace=True))
            chans = [base, base // 2, base // 4, base // 8]
            self.ops = nn.Sequential(*[DconvOp(a, b) for a, b in zip(chans[:-1], chans[1:])])
            self.last = nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1)
            self.face_bias = nn.Parameter(torch.zeros(3, CROP, CROP))
            self.base = base
            for m in self.modules():
                if isinstance(m, (nn.ConvTranspose2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(self.last.bias)
            self.last.weight.data.mul_(0.1)

        def forward(self, f):
            x = self.project((f - self.feat_mean) / self.feat_std).view(-1, self.base, 7, 7)
            return torch.tanh(self.last(self.ops(x)) + self.face_bias)

    return FeatureToFace()


def build_linear(dim: int = 128):
    """The prediction head: standardised feature -> pixels by one linear map plus the mean face."""
    import torch
    from torch import nn

    class LinearFace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("feat_mean", torch.zeros(dim))
            self.register_buffer("feat_std", torch.ones(dim))
            self.map = nn.Linear(dim, 3 * CROP * CROP)  # bias = mean face, both in pixel levels

        def forward(self, f):
            x = self.map((f - self.feat_mean) / self.feat_std).view(-1, CROP, CROP, 3).permute(0, 3, 1, 2)
            return x / 127.5 - 1

    return LinearFace()


def build(config: dict):
    """The network a registry file's ``config`` describes."""
    config = dict(config)
    if config.pop("type", "dconv") == "linear":
        return build_linear(**config)
    return build_network(**config)


def to_image(t) -> np.ndarray:
    """Network output in [-1, 1] (N,3,H,W) to uint8 images (N,H,W,3)."""
    x = ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(0, 2, 3, 1).cpu().numpy()


def to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


class Reconstructor:
    """A trained network, ready for inference on decoded features."""

    def __init__(self, name: str, net) -> None:
        self.name = name
        self.net = net.eval()
        self._lock = threading.Lock()

    def __call__(self, features: np.ndarray) -> np.ndarray:
        import torch

        f = torch.from_numpy(np.atleast_2d(np.asarray(features, np.float32)))
        with self._lock, torch.inference_mode():
            return to_image(self.net(f))


def load_state(path) -> tuple[dict, dict]:
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob["config"], {k: v.float() for k, v in blob["state"].items()}


HEADS = ("display", "prediction")


def default_name(head: str = "display") -> str:
    """The registered reconstruction model of ``head`` with the highest tag (tags are given in
    order); the ``prediction`` head falls back to the display model."""
    from facecodec import zoo

    if head not in HEADS:
        raise UnknownModelError(f"unknown reconstruction head {head!r} ({', '.join(HEADS)})")
    found = sorted((e.tag or 0, e.name) for e in zoo.entries(KIND) if (e.head or "display") == head)
    if not found and head == "prediction":
        return default_name("display")
    if not found:
        raise UnknownModelError("no reconstruction model is registered; train one with `python -m train reconstruction`")
    return found[-1][1]


def load_reconstructor(name: str | None = None) -> Reconstructor:
    """A registered reconstruction network (the default one, :func:`default_name`, when None)."""
    return _load(name or default_name())


@lru_cache(maxsize=None)
def _load(name: str) -> Reconstructor:
    from facecodec import zoo

    e = zoo.entry(name)
    if e.kind != KIND:
        raise UnknownModelError(f"{name!r} is a {e.kind} model, not a reconstruction model")
    config, state = load_state(zoo.model_path(name))
    net = build(config)
    net.load_state_dict(state)
    return Reconstructor(name, net)


def clear_cache() -> None:
    """Forget loaded networks (after the registry changed)."""
    _load.cache_clear()


def reconstruct(base_payload: bytes) -> np.ndarray:
    """The 112x112 face rebuilt from a base-layer payload alone."""
    from facecodec import base_layer

    decoded = base_layer.decode(base_payload)
    return load_reconstructor()(decoded.feature)[0]
