"""dlib's face descriptor network run by PyTorch, with dlib's own weights: the same 128-D
features as ``dlib-resnet-128``, about five times faster on one core.

The ``dlib-bin`` wheel is built without BLAS, so its ResNet takes about 95 ms per face here;
dlib built from source against OpenBLAS takes about 15 ms but needs a ten-minute compile on
every fresh machine. PyTorch (already a dependency) runs the same network with oneDNN
convolutions in about the same time as the OpenBLAS build, reading the weights from the
``dlib_face_recognition_resnet_model_v1.dat`` that ``face_recognition_models`` ships.

The network (dlib's ``dnn_face_recognition_ex.cpp``): a 7x7/2 convolution, max pooling 3x3/2,
then 14 residual units (3 of 32 channels, 4 of 64, 3 of 128, 3 of 256, 1 of 256; the first
unit of each width but the first halves the resolution: 3x3/2 convolution, 2x2/2 average
pooling on the shortcut), global average pooling, and a 128x256 projection without bias.
dlib's batch normalisation is frozen into ``affine`` layers, folded here into the
convolutions. dlib adds tensors of different shapes by zero-padding the smaller one
(channels and the bottom/right edges), which :func:`_add` reproduces. Input pixels are
``(rgb - mean) / 256`` with the mean stored in the file.

Weights are read from dlib's serialisation: the layer names (``con_4``, ``affine_``...) and
their parameter tensors (a version, four dimensions in dlib's variable-length integers, then
little-endian float32). :func:`load` checks the structure and :class:`TorchDescriptor`
checks, once, that its output matches dlib's on a test chip before it is used.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODEL_FILE = ("face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat")
LAYER_NAMES = (b"con_4", b"affine_", b"relu_", b"add_prev_", b"avg_pool_2", b"max_pool_2", b"fc_2",
               b"input_rgb_image_sized", b"loss_metric_2")
MAX_GAP = 4096  # bytes of flags and empty tensors between two layers' details
AGREEMENT = 1e-3  # largest accepted Euclidean distance to dlib's own descriptor


class DlibFormatError(ValueError):
    """The model file is not the dlib ResNet this module knows how to read."""


@dataclass
class Layer:
    name: str
    params: np.ndarray | None = field(default=None, repr=False)
    dims: tuple[int, ...] = ()
    ints: tuple[int, ...] = ()
    floats: tuple[float, ...] = ()


class _Reader:
    """dlib's serialisation primitives."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def int(self) -> int:
        control = self.data[self.pos]
        n = control & 0x0F
        if n > 8:
            raise DlibFormatError(f"bad integer at byte {self.pos}")
        v = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -v if control & 0x80 else v

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self) -> tuple[tuple[int, ...], np.ndarray]:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.pos} (expected 2)")
        dims = tuple(self.int() for _ in range(4))
        n = int(np.prod(dims))
        if n < 0 or self.pos + 4 * n > len(self.data):
            raise DlibFormatError(f"tensor of {dims} runs past the end of the file")
        values = np.frombuffer(self.data, "<f4", n, self.pos).copy()
        self.pos += 4 * n
        return dims, values

    def next_name(self) -> bytes | None:
        """Move to the next layer name (a dlib string: length, then bytes) within MAX_GAP bytes."""
        end = min(len(self.data), self.pos + MAX_GAP)
        best = None
        for name in LAYER_NAMES:
            i = self.data.find(bytes([0x01, len(name)]) + name, self.pos, end + len(name) + 2)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, name)
        if best is None:
            return None
        self.pos = best[0] + 2 + len(best[1])
        return best[1]


def read_layers(data: bytes) -> list[Layer]:
    """Every layer of the file with its parameters, from the input upwards."""
    r = _Reader(data)
    if r.next_name() != b"loss_metric_2":
        raise DlibFormatError("not a dlib metric-loss network (no loss_metric_2 header)")
    layers = [Layer("loss_metric_2")]
    r.pos = data.find(b"\x15input_rgb_image_sized")
    if r.pos < 0:
        raise DlibFormatError("no input_rgb_image_sized layer")
    r.pos -= 1
    while True:
        name = r.next_name()
        if name is None:
            break
        n = name.decode()
        if n == "input_rgb_image_sized":
            layers.append(Layer(n, floats=(r.float(), r.float(), r.float()), ints=(r.int(), r.int())))
        elif n == "con_4":
            dims, params = r.tensor()
            layers.append(Layer(n, params, dims, tuple(r.int() for _ in range(7))))
        elif n == "affine_":
            dims, params = r.tensor()
            layers.append(Layer(n, params, dims))
        elif n in ("avg_pool_2", "max_pool_2"):
            layers.append(Layer(n, ints=tuple(r.int() for _ in range(6))))
        elif n == "fc_2":
            ints = (r.int(), r.int())
            dims, params = r.tensor()
            layers.append(Layer(n, params, dims, ints))
        else:
            layers.append(Layer(n))
    return layers


def _build(layers: list[Layer]):
    import torch
    import torch.nn.functional as F
    from torch import nn

    def fused_conv(con: Layer, aff: Layer) -> nn.Conv2d:
        nf, nr, nc, sy, sx, py, px = con.ints
        p = con.params
        k = (len(p) - nf) // (nf * nr * nc)
        if k * nf * nr * nc + nf != len(p) or aff.params is None or len(aff.params) != 2 * nf:
            raise DlibFormatError(f"convolution of {nf} {nr}x{nc} filters has {len(p)} parameters")
        w = p[: nf * k * nr * nc].reshape(nf, k, nr, nc)
        b = p[nf * k * nr * nc :]
        gamma, beta = aff.params[:nf], aff.params[nf:]
        conv = nn.Conv2d(k, nf, (nr, nc), (sy, sx), (py, px), bias=True)
        conv.weight.data = torch.from_numpy((w * gamma[:, None, None, None]).astype(np.float32))
        conv.bias.data = torch.from_numpy((b * gamma + beta).astype(np.float32))
        return conv

    def _add(a, b):
        if a.shape == b.shape:
            return a + b
        shape = [max(x, y) for x, y in zip(a.shape, b.shape)]
        out = a.new_zeros(shape)
        out[:, : a.shape[1], : a.shape[2], : a.shape[3]] += a
        out[:, : b.shape[1], : b.shape[2], : b.shape[3]] += b
        return out

    class Unit(nn.Module):
        def __init__(self, c1, c2, pool):
            super().__init__()
            self.c1, self.c2, self.pool = c1, c2, pool

        def forward(self, x):
            y = self.c2(F.relu(self.c1(x)))
            s = F.avg_pool2d(x, self.pool[0], self.pool[1]) if self.pool else x
            return F.relu(_add(y, s))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            names = [layer.name for layer in layers]
            if names[:6] != ["loss_metric_2", "input_rgb_image_sized", "con_4", "affine_", "relu_", "max_pool_2"]:
                raise DlibFormatError(f"unexpected first layers {names[:6]}")
            self.register_buffer("mean", torch.tensor(layers[1].floats, dtype=torch.float32).view(1, 3, 1, 1))
            self.stem = fused_conv(layers[2], layers[3])
            self.max_pool = layers[5].ints[:3:2] + layers[5].ints[4:5]  # size, stride, padding
            units, i = [], 6
            while i < len(layers) and layers[i].name == "con_4":
                if [x.name for x in layers[i : i + 5]] != ["con_4", "affine_", "relu_", "con_4", "affine_"]:
                    raise DlibFormatError(f"unexpected residual unit at layer {i}")
                c1, c2 = fused_conv(layers[i], layers[i + 1]), fused_conv(layers[i + 3], layers[i + 4])
                i += 5
                pool = None
                if layers[i].name == "avg_pool_2":
                    pool = (layers[i].ints[0], layers[i].ints[2])
                    i += 1
                if [x.name for x in layers[i : i + 2]] != ["add_prev_", "relu_"]:
                    raise DlibFormatError(f"unexpected end of residual unit at layer {i}")
                i += 2
                units.append(Unit(c1, c2, pool))
            self.units = nn.Sequential(*units)
            tail = layers[i:]
            if [x.name for x in tail] != ["avg_pool_2", "fc_2"] or tail[0].ints[0] != 0:
                raise DlibFormatError(f"unexpected last layers {[x.name for x in tail]}")
            fc = tail[1]
            self.register_buffer("fc", torch.from_numpy(fc.params.reshape(fc.dims[0], fc.dims[1]).astype(np.float32)))

        def forward(self, chips):
            x = (chips.permute(0, 3, 1, 2).float() - self.mean) / 256.0
            x = F.relu(self.stem(x))
            size, stride, pad = self.max_pool
            x = F.max_pool2d(x, size, stride, pad)
            x = self.units(x)
            return x.mean((2, 3)) @ self.fc

    net = Net().eval()
    if len(net.units) != 14:
        raise DlibFormatError(f"expected 14 residual units, found {len(net.units)}")
    return net


def load(path: Path | None = None):
    """The network of ``path`` (default: face_recognition_models' file) as a PyTorch module."""
    from facecodec.zoo import package_data_file

    path = Path(path) if path is not None else package_data_file(*MODEL_FILE)
    return _build(read_layers(path.read_bytes()))


class TorchDescriptor:
    """dlib's descriptor network run by PyTorch. Before its first use it compares itself with
    ``reference`` (dlib's own ``embed``) on a test chip and refuses to run
    (:class:`DlibFormatError`) if the two disagree."""

    dim = 128

    def __init__(self, reference) -> None:
        self.reference = reference
        self._net = None
        self._lock = threading.Lock()

    def network(self):
        """The PyTorch network, loaded and checked against dlib on first use."""
        with self._lock:
            if self._net is None:
                import torch

                net = load()
                chip = np.random.default_rng(150).integers(0, 256, (150, 150, 3), dtype=np.uint8)
                with torch.inference_mode():
                    mine = net(torch.from_numpy(chip[None]))[0].numpy()
                theirs = self.reference([chip])[0]
                dist = float(np.linalg.norm(mine - theirs))
                if not dist < AGREEMENT:
                    raise DlibFormatError(f"the PyTorch network differs from dlib by {dist:.2e} on a test chip")
                log.info("dlib ResNet runs in PyTorch (distance to dlib's descriptor on a test chip: %.1e)", dist)
                self._net = net
            return self._net

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        import torch

        if not chips:
            return np.zeros((0, self.dim), np.float32)
        net = self.network()
        with torch.inference_mode():
            x = torch.from_numpy(np.stack([np.ascontiguousarray(c) for c in chips]))
            return net(x).numpy().astype(np.float32)
