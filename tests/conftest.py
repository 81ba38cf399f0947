from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesphere.io.data import data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests that need it fail loudly when it is missing."""
    root = data_dir()
    if not (root / "lfw" / "pairs.txt").is_file():
        pytest.fail(f"shared data not found at {root}; set FACESPHERE_DATA")
    return root


@pytest.fixture()
def blank(tmp_path: Path) -> Path:
    """A uniform grey PNG: a readable image without a face."""
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(path)
    return path


@pytest.fixture()
def corrupt(tmp_path: Path) -> Path:
    """A file that starts like a JPEG and is not one."""
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return path


@pytest.fixture(scope="session", autouse=True)
def facesphere_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One fresh $FACESPHERE_HOME for the whole run (weight cache, keys), so tests never write
    into ~/.facesphere; tests that need their own home still set it themselves."""
    home = tmp_path_factory.mktemp("facesphere-home")
    saved = os.environ.get("FACESPHERE_HOME")
    os.environ["FACESPHERE_HOME"] = str(home)
    yield home
    if saved is None:
        del os.environ["FACESPHERE_HOME"]
    else:
        os.environ["FACESPHERE_HOME"] = saved


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """One PostgreSQL + pgvector server for the whole run (see tests/postgres.py)."""
    from postgres import start_server

    server = start_server(tmp_path_factory.mktemp("postgres"))
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """The URL of the test server's database (add `gallery=` with `postgres.gallery_url`)."""
    return postgres_server.get_uri()


@pytest.fixture(params=["sqlite", "postgres"])
def gallery_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a fresh gallery goes, once per back end: a file (SQLite + FAISS), or a new gallery
    name in the session's PostgreSQL database (PostgreSQL + pgvector)."""
    if request.param == "sqlite":
        return tmp_path / "people.db"
    from postgres import gallery_url

    return gallery_url(request.getfixturevalue("postgres_url"))
