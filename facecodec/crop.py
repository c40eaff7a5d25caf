"""The face crop that the reconstruction and enhancement layers work on.

It is the centre 112x112 of dlib's 150x150 aligned chip (padding 0.25): tight around the face
(the landmark box spans the chip's inner 100 px), no resampling, and the same pixels for every
codec so that rate-distortion comparisons are fair.
"""

from __future__ import annotations

import numpy as np

from facecodec.errors import ImageError

CROP = 112
CHIP = 150


def face_crop(image: np.ndarray) -> np.ndarray:
    """The 112x112 crop from a 150x150 chip, or a 112x112 crop passed through."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected an RGB uint8 chip, got {getattr(image, 'shape', type(image))}")
    h, w = image.shape[:2]
    if (h, w) == (CROP, CROP):
        return np.ascontiguousarray(image)
    if (h, w) != (CHIP, CHIP):
        raise ImageError(f"expected a {CHIP}x{CHIP} aligned chip or a {CROP}x{CROP} crop, got {w}x{h}")
    o = (CHIP - CROP) // 2
    return np.ascontiguousarray(image[o : o + CROP, o : o + CROP])
