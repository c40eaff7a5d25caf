"""Training data from the prepared LFW cache: train people only, features as the server sees them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.prepare import FeatureCache, default_cache


def decoded_features(features: np.ndarray, step_index: int | None = None) -> np.ndarray:
    """Features after a base-layer round trip at ``step_index`` (default step): what the server holds."""
    from facecodec import base_layer

    codec = base_layer.get_codec("dlib-resnet-128", step_index)
    return np.stack([codec.decompress(codec.compress(f)).feature for f in features])


def load(cache_dir: Path | None = None) -> FeatureCache:
    return FeatureCache(cache_dir or default_cache())
