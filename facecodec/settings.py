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
    ``FACECODEC_TORCH_THREADS``  threads PyTorch may use (0 = PyTorch's default).
    """

    model_config = SettingsConfigDict(env_prefix="FACECODEC_", extra="forbid")

    model_dir: Path | None = None
    facenet_weights: Path | None = None
    feature_backend: str = "dlib-resnet-128"
    base_step: int | None = Field(default=None, ge=0, le=15)
    torch_threads: int = Field(default=0, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> CodecSettings:
    """The process-wide settings, read once from the environment."""
    return CodecSettings()
