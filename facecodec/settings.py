"""Settings of the codec library, read from ``FACECODEC_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CodecSettings(BaseSettings):
    """Where models live and which backends are used by default.

    ``FACECODEC_MODEL_DIR``      extra folder searched for model files before the packaged ones.
    ``FACECODEC_FACENET_WEIGHTS`` path of the InceptionResnetV1 (VGGFace2) state dict, for the
                                 ``facenet-vggface2-512`` backend.
    ``FACECODEC_FEATURE_BACKEND`` default feature backend (``dlib-resnet-128``).
    ``FACECODEC_BASE_STEP``      index into the base-layer quantization ladder (default: the
                                 model's own default step, chosen on LFW by ``python -m eval rate-accuracy --set-default``).
    ``FACECODEC_RUNTIME``        what runs the converted networks (MTCNN, dlib's descriptor, the
                                 display network): ``openvino`` (default, fastest here) or ``onnxruntime``
                                 (:mod:`facecodec.runtime`).
    ``FACECODEC_DLIB_ENGINE``    ``runtime`` (dlib's network converted to ONNX, run by the runtime: same
                                 features to 1e-6, ~20x faster than the wheel's) or ``dlib`` (dlib itself).
    ``FACECODEC_MTCNN_FACTOR``   MTCNN's image-pyramid scale factor (0.709; coarser is faster).
    """

    model_config = SettingsConfigDict(env_prefix="FACECODEC_", extra="forbid")

    model_dir: Path | None = None
    facenet_weights: Path | None = None
    feature_backend: str = "dlib-resnet-128"
    base_step: int | None = Field(default=None, ge=0, le=15)
    runtime: str = Field(default="openvino", pattern="^(openvino|onnxruntime)$")
    dlib_engine: str = Field(default="runtime", pattern="^(runtime|dlib)$")
    mtcnn_factor: float = Field(default=0.709, gt=0.3, lt=0.95)


@lru_cache(maxsize=1)
def get_settings() -> CodecSettings:
    """The process-wide settings, read once from the environment."""
    return CodecSettings()
