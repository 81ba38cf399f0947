"""The service's configuration: one `ServeConfig`, passed to `create_app` and, by
`facesphere serve`, to each worker process as JSON in `$FACESPHERE_SERVE_CONFIG`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facesphere.errors import ConfigError
from facesphere.io.image import DEFAULT_MAX_PIXELS
from facesphere.paths import facesphere_home

CONFIG_ENV = "FACESPHERE_SERVE_CONFIG"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class ServeConfig:
    """How to run the service.

    home: state folder (keys, galleries; None: `facesphere_home()`); max_upload_bytes: request
    body limit (413 beyond); max_pixels: largest image accepted, refused from its header;
    analyzer: FaceAnalyzer keyword arguments (detector, recognizer, threshold, ...) of the
    analyzer the service builds; torch_threads: torch threads of that analyzer (None: torch's
    default); preload: build the analyzer at startup rather than at the first request.
    """

    home: str | Path | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    analyzer: dict[str, Any] = field(default_factory=dict)
    torch_threads: int | None = None
    preload: bool = False

    def home_path(self) -> Path:
        """The state folder."""
        return Path(self.home).expanduser() if self.home is not None else facesphere_home()

    def to_json(self) -> str:
        """The configuration as JSON (what `from_json` reads back)."""
        data = asdict(self)
        data["home"] = None if self.home is None else str(self.home)
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
