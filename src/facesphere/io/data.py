"""Where the shared data sets live (LFW, celeba299, orl, landmarks5)."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[3]


def data_dir() -> Path:
    """The shared data folder: `$FACESPHERE_DATA`, else `../shared/data` from the repo root."""
    env = os.environ.get("FACESPHERE_DATA")
    if env:
        return Path(env).expanduser().resolve()
    for base in (_REPO_ROOT, Path.cwd()):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return (_REPO_ROOT / ".." / "shared" / "data").resolve()
