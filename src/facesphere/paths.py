"""Where facesphere keeps its state: `$FACESPHERE_HOME`, default `~/.facesphere`."""

from __future__ import annotations

import os
from pathlib import Path


def facesphere_home() -> Path:
    """The folder for keys, caches and service state (created on demand by its users)."""
    return Path(os.environ.get("FACESPHERE_HOME", "~/.facesphere")).expanduser()
