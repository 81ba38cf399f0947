"""Where facesphere keeps its state: `$FACESPHERE_HOME`, default `~/.facesphere`; and the
owner-only files its caches keep there."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO


def facesphere_home() -> Path:
    """The folder for keys, caches and service state (created on demand by its users)."""
    return Path(os.environ.get("FACESPHERE_HOME", "~/.facesphere")).expanduser()


def cache_dir() -> Path:
    """The folder of facesphere's caches (anything in it can be rebuilt)."""
    return facesphere_home() / "cache"


def read_private(path: Path) -> bytes | None:
    """The bytes of `path` if it is a regular file (not a link) of this user that no one else
    may write; None when it is missing or not such a file. OSError when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        private = (
            stat.S_ISREG(info.st_mode)
            and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        )
        return handle.read() if private else None


def make_private_dirs(folder: Path) -> None:
    """Make `folder` and its missing parents owner-only (0700; a umask only removes bits);
    folders that exist are left as they are. OSError when that is impossible."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)  # exist_ok: made by another process meanwhile


def create_private(path: Path) -> None:
    """Make an empty owner-only (0600) file at `path` (missing folders 0700) unless one is
    there: for SQLite databases, whose -wal and -shm files get the database's permissions.
    OSError when that is impossible."""
    make_private_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def open_private(path: Path) -> BinaryIO:
    """`path` opened for writing (truncated), created owner-only (0600) when missing; a
    symbolic link there is refused. Its folder must exist. OSError when that is impossible."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "wb")


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a temporary file renamed into place), owner-only
    (0600; missing folders are made 0700). OSError when that is impossible."""
    make_private_dirs(path.parent)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
