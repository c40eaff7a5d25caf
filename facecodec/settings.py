"""Settings of the codec library, read from ``FACECODEC_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CodecSettings(BaseSettings):
    """Where models live, which backends and runtime are used by default (``FACECODEC_*``; the README's
    table is generated from the descriptions below by ``python -m tools.settings_tables``)."""

    model_config = SettingsConfigDict(env_prefix="FACECODEC_", extra="forbid")

    model_dir: Path | None = Field(None, description="extra folder searched for model files before the packaged ones")
    facenet_weights: Path | None = Field(None, description="InceptionResnetV1 (VGGFace2) state dict, for the "
                                                           "facenet-vggface2-512 backend (needs PyTorch)")
    feature_backend: str = Field("dlib-resnet-128", description="default feature backend")
    base_step: int | None = Field(default=None, ge=0, le=15, description="index into the base-layer step ladder "
                                  "(unset: the model's default step, chosen on LFW by python -m eval rate-accuracy "
                                  "--set-default)")
    runtime: str = Field(default="openvino", pattern="^(openvino|onnxruntime)$",
                         description="what runs the converted networks (MTCNN, dlib's descriptor, the "
                                     "de-convolutional reconstruction network, the restoration networks): "
                                     "openvino (fastest here) or onnxruntime")
    dlib_engine: str = Field(default="runtime", pattern="^(runtime|dlib)$",
                             description="runtime: dlib's network converted to ONNX, run by the runtime (dlib's "
                                         "features to 1e-6, ~20x faster than the dlib-bin wheel); dlib: dlib itself")
    mtcnn_factor: float = Field(default=0.709, gt=0.3, lt=0.95,
                                description="MTCNN's image-pyramid scale step (coarser is faster)")


@lru_cache(maxsize=1)
def get_settings() -> CodecSettings:
    """The process-wide settings, read once from the environment."""
    return CodecSettings()
