"""Files on disk: which suffixes count as images, walking folders, content digests, and the
check that keeps an output from overwriting an input."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from facesphere.errors import ConfigError

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
