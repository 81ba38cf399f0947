from __future__ import annotations

from pathlib import Path

import pytest

from facesphere.io.data import data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests that need it fail loudly when it is missing."""
    root = data_dir()
    if not (root / "lfw" / "pairs.txt").is_file():
        pytest.fail(f"shared data not found at {root}; set FACESPHERE_DATA")
    return root
