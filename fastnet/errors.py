"""Exceptions raised by fastnet.

Every error is a subclass of :class:`FastnetError` and of the closest built-in
exception, so ``except ValueError`` keeps working for users who expect it.
"""

from __future__ import annotations

__all__ = [
    "FastnetError",
    "BackendUnavailableError",
    "BackendMismatchError",
    "DatasetError",
    "ChecksumError",
    "DownloadError",
]


class FastnetError(Exception):
    """Base class of every error fastnet raises on purpose."""


class BackendUnavailableError(FastnetError, RuntimeError):
    """The requested backend cannot run here (package missing, no device, ...)."""


class BackendMismatchError(FastnetError, TypeError):
    """An array belongs to another backend than the one doing the work."""


class DatasetError(FastnetError, ValueError):
    """A data file is missing, malformed or corrupt."""


class ChecksumError(DatasetError):
    """A file's SHA-256 does not match the published value."""


class DownloadError(FastnetError, OSError):
    """Every mirror failed while downloading a data file."""
