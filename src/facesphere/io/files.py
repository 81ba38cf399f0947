"""Files on disk: which suffixes count as images, walking folders, what is not a file one can
read, UTF-8 text files, content digests, and the check that keeps an output from overwriting an
input."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from facesphere.errors import ConfigError, FacesphereError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"}


def iter_image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (walked recursively, sorted) into image file paths."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        else:
            found.append(path)
    return found


_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is no file to read: "file not found", or "not a regular file (a FIFO)" naming
    what it is (a directory, a FIFO, a character device such as /dev/zero, a socket); None for
    a regular file. It is only stat()ed, never opened, so a FIFO cannot block."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "an unknown kind of file")
    return f"not a regular file ({kind})"


def read_utf8(path: str | os.PathLike, what: str, error: type[FacesphereError]) -> str:
    """The text of the UTF-8 file at `path` (a `what`, for messages: "config", "pairs file");
    `error` with a one-line reason when it is no regular file, cannot be read or is not UTF-8."""
    problem = file_problem(path)
    if problem is not None:
        raise error(f"cannot read {what} {path}: {problem}")
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output(
    output: str | os.PathLike, *inputs: str | os.PathLike | None, folder: bool = False
) -> None:
    """ConfigError (exit 2) when writing `output` would overwrite one of `inputs` (None ones
    are ignored): the same path once symbolic links are resolved, or the same file by another
    name (a hard link). With `folder`, `output` is a folder to write into, refused also when
    an input lies inside it."""
    target = Path(output)
    resolved = target.resolve()
    for entry in inputs:
        if entry is None:
            continue
        source = Path(entry)
        same = source.resolve() == resolved
        if not same and target.exists() and source.exists():
            same = os.path.samefile(target, source)
        if same:
            raise ConfigError(f"the output {target} is the input {source}; not overwriting it")
        if folder and source.resolve().is_relative_to(resolved):
            raise ConfigError(f"the output folder {target} holds the input {source}")
