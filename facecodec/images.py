"""Reading images from files or bytes into the RGB uint8 arrays the codec works on."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from facecodec.errors import ImageError


def load_rgb(source: str | Path | bytes) -> np.ndarray:
    """An RGB uint8 HxWx3 array from a path or encoded bytes; :class:`ImageError` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as e:
        raise ImageError(f"cannot open image {source}: {e.strerror}") from e
    try:
        with fp, Image.open(fp) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"not a readable image: {e}") from e
