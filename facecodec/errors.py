"""One exception hierarchy for the codec library.

Every failure a caller can act on is a :class:`FaceCodecError`; payload problems are
:class:`PayloadError` so that services can answer "bad input" without catching everything.
"""

from __future__ import annotations


class FaceCodecError(Exception):
    """Base class of every error raised by :mod:`facecodec`."""


class PayloadError(FaceCodecError, ValueError):
    """A payload cannot be decoded: truncated, corrupted, or of an unknown kind."""


class TruncatedPayloadError(PayloadError):
    """The payload is shorter than its header says it must be."""


class CorruptPayloadError(PayloadError):
    """The payload's checksum or contents are inconsistent."""


class UnknownFormatError(PayloadError):
    """The payload's magic byte, format version, backend or step index is not known."""


class UnknownModelError(PayloadError):
    """The payload names a model that is not in the registry."""


class ModelFileMissingError(FaceCodecError, FileNotFoundError):
    """A weights file is not on disk; the message names the setting that points to it."""


class ModelIntegrityError(FaceCodecError):
    """A model file's SHA-256 is not the one the registry (``manifest.json``) lists for it."""


class NoFaceError(FaceCodecError):
    """No face was found in an image and no fallback was allowed."""


class ImageError(FaceCodecError, ValueError):
    """An input image cannot be read or has an unusable shape."""
