"""The face features the server matches, stores and searches.

One descriptor backend: the base layers the server decodes to match a face against the gallery,
to search the stored faces (``history.py``) and to answer REST's features. Its dimension comes from
its registered base-layer model (128 for dlib's ResNet), never from a literal: the codec also has
a 512-D backend, and a server matching that one would change :data:`BACKEND` and nothing else.
"""

from __future__ import annotations

from functools import cache

from facecodec import base_layer

BACKEND = "dlib-resnet-128"


@cache
def model_name() -> str:
    """The default base-layer model of :data:`BACKEND` (the zoo's newest)."""
    return base_layer.default_model_name(BACKEND)


@cache
def dim() -> int:
    """Values in one feature."""
    return base_layer.load_model(model_name()).dim
