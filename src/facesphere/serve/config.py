"""The service's configuration: one `ServeConfig`, passed to `create_app` and, by
`facesphere serve`, to each worker process as JSON in `$FACESPHERE_SERVE_CONFIG`."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facesphere.errors import ConfigError
from facesphere.gallery.backend import backend_for
from facesphere.gallery.errors import GalleryError
from facesphere.gallery.folder import GALLERIES_DIR
from facesphere.io.image import DEFAULT_MAX_PIXELS
from facesphere.paths import facesphere_home

CONFIG_ENV = "FACESPHERE_SERVE_CONFIG"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_IMAGES = 16
MAX_DEFAULT_ANALYSIS_WORKERS = 8


def default_analysis_workers(processes: int = 1) -> int:
    """Analysis slots per worker process by default: the cores each of `processes` gets, at
    least 2 (so one long analysis never holds up all the others) and at most 8."""
    cores = max(1, (os.cpu_count() or 1) // max(1, processes))
    return min(MAX_DEFAULT_ANALYSIS_WORKERS, max(2, cores))


@dataclass(frozen=True)
class ServeConfig:
    """How to run the service.

    home: state folder (keys; None: `facesphere_home()`). Where the galleries are, one of
    two alternatives: galleries, a folder of SQLite galleries, the one the `facesphere gallery`
    verbs use by name (None: `<home>/galleries`); or gallery_url, a database of galleries
    (`postgresql://user@host/db`) holding them instead, so that every replica pointed at it
    serves the same ones (ConfigError when both are given). max_upload_bytes: request body
    limit (413 beyond); max_pixels: largest image accepted, refused from its header;
    max_images: images per request to a batch endpoint or an enrollment (413 beyond);
    analyzer: FaceAnalyzer keyword arguments (detector, recognizer, threshold, ...) of the
    analyzer the service builds; torch_threads: torch threads of that analyzer (None: torch's
    default); preload: build the analyzer at startup rather than at the first request.

    Bounded work (per worker process): analysis_workers: analyses run at once (None:
    `default_analysis_workers()`); queue_size: analysis requests admitted to wait for one
    beyond those (503 with Retry-After when full); request_timeout_s: the time budget of an
    analysis request, from its admission to its answer (503 with Retry-After past it).

    Rate limits (per worker process; token buckets, 429 with Retry-After when empty; a rate
    of 0 turns one off): key_rate_per_s and key_burst per API key; address_rate_per_s and
    address_burst per client address; auth_failures_per_min and auth_failure_burst: failed
    authentications per client address, after which the address is refused outright.
    """

    home: str | Path | None = None
    galleries: str | Path | None = None
    gallery_url: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = DEFAULT_MAX_IMAGES
    analyzer: dict[str, Any] = field(default_factory=dict)
    torch_threads: int | None = None
    preload: bool = False
    analysis_workers: int | None = None
    queue_size: int = 8
    request_timeout_s: float = 30.0
    key_rate_per_s: float = 50.0
    key_burst: int = 100
    address_rate_per_s: float = 100.0
    address_burst: int = 200
    auth_failures_per_min: float = 10.0
    auth_failure_burst: int = 10

    def __post_init__(self) -> None:
        if self.gallery_url is not None:
            if self.galleries is not None:
                raise ConfigError(
                    "give a galleries folder (galleries) or a database of galleries "
                    "(gallery_url), not both",
                    "gallery_url",
                )
            try:
                backend_for(str(self.gallery_url)).gallery_target(str(self.gallery_url), "x")
            except GalleryError as exc:
                raise ConfigError(str(exc), "gallery_url") from None
        if self.analysis_workers is not None:
            _check_number(self, "analysis_workers", 1, integer=True)
        _check_number(self, "queue_size", 0, integer=True)
        _check_number(self, "max_images", 1, integer=True)
        _check_number(self, "request_timeout_s", 0, above=True)
        for rate in ("key_rate_per_s", "address_rate_per_s", "auth_failures_per_min"):
            _check_number(self, rate, 0)
        for burst in ("key_burst", "address_burst", "auth_failure_burst"):
            _check_number(self, burst, 1, integer=True)

    def analysis_slots(self) -> int:
        """Analysis slots: `analysis_workers`, else the machine's default."""
        return self.analysis_workers or default_analysis_workers()

    def home_path(self) -> Path:
        """The state folder."""
        return Path(self.home).expanduser() if self.home is not None else facesphere_home()

    def galleries_path(self) -> Path:
        """The galleries folder."""
        if self.galleries is None:
            return self.home_path() / GALLERIES_DIR
        return Path(self.galleries).expanduser()

    def to_json(self) -> str:
        """The configuration as JSON (what `from_json` reads back)."""
        data = asdict(self)
        for folder in ("home", "galleries"):
            data[folder] = None if data[folder] is None else str(data[folder])
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """A configuration from JSON; missing keys keep their defaults (ConfigError if bad)."""
        try:
            data = json.loads(text or "{}")
        except ValueError as exc:
            raise ConfigError(f"not JSON: {exc}", CONFIG_ENV) from exc
        if not isinstance(data, dict):
            raise ConfigError("must be a JSON object", CONFIG_ENV)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                CONFIG_ENV,
            )
        return cls(**data)

    @classmethod
    def from_env(cls) -> ServeConfig:
        """The configuration `facesphere serve` left in `$FACESPHERE_SERVE_CONFIG`."""
        return cls.from_json(os.environ.get(CONFIG_ENV, ""))


def _check_number(
    config: ServeConfig, name: str, minimum: float, integer: bool = False, above: bool = False
) -> None:
    """ConfigError naming `name` unless it is a finite number (an integer when `integer`) at
    least `minimum` (above it when `above`)."""
    value = getattr(config, name)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise ConfigError(f"must be {'an integer' if integer else 'a finite number'}", name)
    if value < minimum or (above and value == minimum):
        raise ConfigError(f"must be {'above' if above else 'at least'} {minimum:g}", name)
