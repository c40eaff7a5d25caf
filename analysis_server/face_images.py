"""Rebuilding a face's image: from the base layer alone (paper 3.2) or with its enhancement layer (3.3); and
the context picture around it (:mod:`facecodec.context`).

CPU-bound (PyTorch, image codecs): callers run these in a worker thread.
"""

from __future__ import annotations

import io

import numpy as np

from analysis_server.errors import ModelUnavailable, edge_payload
from facecodec import enhancement, reconstruction, zoo
from facecodec.errors import FaceCodecError


def reconstruction_installed() -> bool:
    return bool(zoo.entries(reconstruction.KIND))


def base_image(base_payload: bytes) -> np.ndarray:
    """The 112x112 face predicted from the feature alone; :class:`ModelUnavailable` without a network."""
    if not reconstruction_installed():
        raise ModelUnavailable("no reconstruction model is installed, so layer=base cannot be rendered; "
                               "train one with `python -m train reconstruction`, or ask for layer=full")
    try:
        return reconstruction.reconstruct(base_payload)
    except FaceCodecError as e:
        raise ModelUnavailable(f"the reconstruction model cannot rebuild this face: {e}") from e


def full_image(enh_payload: bytes, base_payload: bytes) -> np.ndarray:
    """The full-fidelity 112x112 face from both layers."""
    with edge_payload("the enhancement layer"):
        return enhancement.decode(enh_payload, base_payload)


def context_image(payload: bytes):
    """(RGB picture, header) of a context payload (:mod:`facecodec.context`)."""
    from facecodec import context

    with edge_payload("the context picture"):
        picture, header = context.decode(payload)
    return picture.image, header


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, "PNG")
    return buf.getvalue()
