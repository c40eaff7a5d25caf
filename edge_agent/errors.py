"""One exception hierarchy for the edge agent."""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base class of every error the edge agent raises on purpose."""


class SourceError(EdgeAgentError):
    """A frame source cannot be opened or has stopped delivering frames."""


class StoreError(EdgeAgentError):
    """The spool or the texture store cannot be written (disk full, unwritable folder...)."""


class StoreFullError(StoreError):
    """The disk (or the file-size limit) holding the spool or the texture store is full."""


class StoreUnwritableError(StoreError):
    """The data folder cannot be written: read-only, no permission, or not a folder."""
