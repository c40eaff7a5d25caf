"""One exception hierarchy for the analysis server; the REST layer maps each to one HTTP status."""

from __future__ import annotations


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
