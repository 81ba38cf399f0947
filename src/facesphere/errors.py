"""The one error hierarchy of facesphere: every error it raises on purpose is a `FacesphereError`.

Each class says how a front end reports it: `exit_code` for the CLI (2 bad input, 3 no face)
and `http_status` for the REST service. The classes also derive from the built-in exception a
caller would expect (ValueError, FileNotFoundError), so generic handlers keep working.
"""

from __future__ import annotations


class FacesphereError(Exception):
    """Root of facesphere's errors; the message is one line saying what went wrong."""

    exit_code = 2
    http_status = 400


class ConfigError(FacesphereError, ValueError):
    """An unknown or invalid option, name or configuration value."""

    http_status = 422

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"config key {key!r}: {message}" if key else message)
        self.key = key


class ImageError(FacesphereError, ValueError):
    """An input could not be used as an image; the message names the source and the reason."""

    http_status = 422

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class NoFaceError(FacesphereError, ValueError):
    """An image holds no detectable face where one is needed."""

    exit_code = 3
    http_status = 422

    def __init__(self, source: str) -> None:
        super().__init__(f"{source}: no face found")
        self.source = source


class ModelError(FacesphereError):
    """A model cannot be built or loaded: unknown name, missing or corrupt file, missing fact."""

    http_status = 500


class ModelFileError(ModelError, FileNotFoundError):
    """A model file is missing, unreadable or not the file its card names (sha256)."""


class DataError(FacesphereError, ValueError):
    """A data file (pairs list, RecordIO, labels) does not follow its format."""


class GalleryError(FacesphereError):
    """A gallery operation could not be done; the message says why."""

    http_status = 409


class VideoError(FacesphereError, ValueError):
    """A video could not be read or written; the message says which and why."""


class TrainingError(FacesphereError):
    """A training run cannot go on (diverged, no data, bad checkpoint)."""


class ExecutorError(FacesphereError):
    """Batch work could not be run: a cluster cannot be reached or a worker died (exit 1)."""

    exit_code = 1
    http_status = 503


class ServiceError(FacesphereError):
    """A service-side operation (API keys, service state) could not be done."""
