"""One exception hierarchy for the analysis server; the REST layer maps each to one HTTP status."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class ServerError(Exception):
    """Base class of every error the analysis server raises on purpose."""

    status = 500


class ConfigurationError(ServerError):
    """A setting is missing or inconsistent; the message names the setting."""


class InvalidInput(ServerError):
    """A request carries a value the server cannot use (bad feature, bad payload, bad image)."""

    status = 422


class PayloadTooLarge(InvalidInput):
    """A request or an uploaded file is larger than the configured limit."""

    status = 413


class NotFound(ServerError):
    """The face, identity or camera does not exist (or has expired)."""

    status = 404


class Gone(ServerError):
    """The thing existed but its data is no longer held anywhere (e.g. the edge dropped the texture)."""

    status = 410


class EdgeOffline(ServerError):
    """The camera that holds a face has no open stream, so its enhancement layer cannot be fetched."""

    status = 504


class EdgeTimeout(ServerError):
    """The edge did not answer an enhancement request within the configured timeout."""

    status = 504


class EdgeFailed(ServerError):
    """The edge answered an enhancement request with an error or an undecodable payload."""

    status = 502


class ModelUnavailable(ServerError):
    """A model the request needs (e.g. the reconstruction network) is not installed."""

    status = 503


class LayerUnsupported(ServerError):
    """The edge that holds a face cannot serve the layer asked for (a facewire.v1 edge, or a v2 edge of a
    release before the context layer: its Hello does not name it)."""

    status = 501


# -- the translations, in one place ------------------------------------------------------------
# Everything that turns another layer's failure into one of ours: a codec error in a payload an edge
# sent, an edge's upload status, and an error carried between two server replicas. (REST maps each
# ServerError to its ``status``; gRPC does its own mapping in grpc_service.py, from the same classes.)

@contextlib.contextmanager
def edge_payload(what: str) -> Iterator[None]:
    """Around decoding or validating a payload an edge sent (``what``: "the enhancement layer of face
    'f1'"): a codec :class:`~facecodec.errors.PayloadError` is the edge's failure (502), a payload
    naming a model this server lacks is :class:`ModelUnavailable` (503)."""
    from facecodec.errors import PayloadError, UnknownModelError

    try:
        yield
    except UnknownModelError as e:
        raise ModelUnavailable(f"{what} needs a model that is not installed: {e}") from e
    except PayloadError as e:
        raise EdgeFailed(f"{what} does not decode: {e}") from e


def upload_error(status: int, camera_id: str, face_id: str, what: str, detail: str = "") -> ServerError:
    """The error an edge's upload status (``facewire`` ``UploadStatus``, not OK) means, for the ``what``
    ("texture", "context picture") of a face."""
    from facewire.v1 import ingest_pb2 as pb

    suffix = f" ({detail})" if detail else ""
    if status == pb.UPLOAD_STATUS_EXPIRED:
        return Gone(f"camera {camera_id!r} no longer holds the {what} of face {face_id!r}{suffix}")
    if status == pb.UPLOAD_STATUS_UNKNOWN_FACE:
        return NotFound(f"camera {camera_id!r} does not know face {face_id!r}{suffix}")
    if status == pb.UPLOAD_STATUS_NO_LAYER:
        return NotFound(f"camera {camera_id!r} kept no {what} of face {face_id!r}{suffix}")
    return EdgeFailed(f"camera {camera_id!r} could not upload the {what} of face {face_id!r}{suffix}")


# The errors one replica may report to another in a forwarded request (by class name on the wire);
# anything else arrives as EdgeFailed.
_REMOTE = {cls.__name__: cls for cls in (EdgeOffline, EdgeTimeout, EdgeFailed, LayerUnsupported)}


def to_remote(e: ServerError) -> dict:
    """A forwarded request's error (one :func:`is_remote` accepts) as the reply another replica reads
    with :func:`from_remote`."""
    return {"error": type(e).__name__, "message": str(e)}


def from_remote(reply: dict, default: str) -> ServerError:
    """The error another replica reported (:func:`to_remote`), as ours."""
    return _REMOTE.get(reply.get("error", ""), EdgeFailed)(reply.get("message") or default)


def is_remote(e: BaseException) -> bool:
    """Whether ``e`` is one a replica reports back to the one that forwarded the request."""
    return type(e) in _REMOTE.values()
