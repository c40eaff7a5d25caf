"""The inference runtime of the converted networks (ONNX files in the model registry).

Every network the services run (MTCNN's three stages, dlib's descriptor, the de-convolutional
reconstruction network that older payloads name, the enhancement layer's restoration networks) is an
ONNX file converted once by ``python -m train runtime-models`` and run here by OpenVINO (default) or
ONNX Runtime, chosen by ``FACECODEC_RUNTIME``. Neither needs PyTorch: a service imports neither torch
nor compressai (PyTorch trains and converts; see ``train/convert.py``).

OpenVINO is the default because it was measured fastest here (``bench/results/edge.json``,
``runtimes``): on one core, MTCNN's RNet on 300 candidates took 8 ms against 25 (ONNX Runtime) and
41 (PyTorch), ONet on 20 candidates 2.7 against 7 and 16; dlib's descriptor is about equal
(3-4 ms a face, against 7.6 in PyTorch). Both run in float32 (OpenVINO's default on CPUs with
bfloat16 units is bfloat16, which moves dlib's features by 2e-3: ``INFERENCE_PRECISION_HINT`` is
pinned), so their outputs match PyTorch's to about 1e-6.

Threads: a :class:`Network` is compiled once per process and called from any number of threads
(each gets its own OpenVINO infer request; ONNX Runtime sessions are thread-safe), each call
running on one core. :func:`set_parallelism` says how many calls may run at once (the edge sets it
to its core budget, one per camera worker), so N cameras use up to N cores.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

RUNTIMES = ("openvino", "onnxruntime")
# OpenVINO keeps kernels compiled for every input shape it has seen (5,000 by default): MTCNN's P-Net
# sees a new shape for every region and pyramid level, and an agent on a 720p camera grew past 1 GB
# (measured: 600 random shapes took 137 -> 664 MB; with 64 kept, 228 MB, 15% slower on that worst
# case). On a live 720p camera, keeping 8 instead of 64 saved 26 MB for 6% fewer frames per core.
SHAPE_CACHE = 16
_parallel = 1
_lock = threading.Lock()


def set_parallelism(calls: int) -> None:
    """How many calls may run at once, process-wide (set before the first network is compiled)."""
    global _parallel
    if calls < 1:
        raise ValueError("parallelism is at least 1")
    _parallel = calls


def runtime_name() -> str:
    from facecodec.settings import get_settings

    return get_settings().runtime


class Network:
    """One ONNX network, compiled for the configured runtime; call it with numpy arrays, in input order."""

    def __init__(self, onnx: bytes, name: str = "network", runtime: str | None = None):
        self.name = name
        self.runtime = runtime or runtime_name()
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}")
        self._local = threading.local()
        if self.runtime == "openvino":
            import openvino as ov

            core = _ov_core()
            config = {"INFERENCE_NUM_THREADS": _parallel, "NUM_STREAMS": _parallel, "INFERENCE_PRECISION_HINT": "f32",
                      "CPU_RUNTIME_CACHE_CAPACITY": SHAPE_CACHE}
            self._compiled = core.compile_model(core.read_model(onnx), "CPU", config)
            self.outputs = [o.get_any_name() for o in self._compiled.outputs]
            self._ov = ov
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
            self._inputs = [i.name for i in self._session.get_inputs()]
            self.outputs = [o.name for o in self._session.get_outputs()]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if self.runtime == "openvino":
            request = getattr(self._local, "request", None)
            if request is None:
                request = self._local.request = self._compiled.create_infer_request()
            result = request.infer(list(inputs), share_inputs=True)
            return [np.array(result[o]) for o in self._compiled.outputs]
        return self._session.run(None, dict(zip(self._inputs, inputs)))


_core = None


def _ov_core():
    global _core
    with _lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def registered(name: str, member: str | None = None, runtime: str | None = None) -> Network:
    """The registered model ``name`` (an ``.onnx`` file, or the ONNX file ``member`` of a zip of them),
    compiled once per process and runtime (default ``FACECODEC_RUNTIME``): every camera worker shares it."""
    return _registered(name, member, runtime or runtime_name())


@lru_cache(maxsize=None)
def _registered(name: str, member: str | None, runtime: str) -> Network:
    import zipfile

    from facecodec import zoo

    path = zoo.model_path(name)
    if member is None:
        return Network(path.read_bytes(), name, runtime)
    with zipfile.ZipFile(path) as z:
        return Network(z.read(f"{member}.onnx"), f"{name}/{member}", runtime)
