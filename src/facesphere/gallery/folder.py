"""The galleries folder: galleries by name, `<folder>/<name>.sqlite`, one place for the
`facesphere gallery` verbs and `facesphere serve` (default `$FACESPHERE_HOME/galleries`).

A gallery argument of the CLI is a back end's URL when it starts like `scheme://` (such as
`postgresql://user@host/db?gallery=name`, see `gallery.backend`), a path when it holds a folder
separator or ends in a database suffix (`.sqlite`, `.sqlite3`, `.db`), and a gallery name in the
folder otherwise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from facesphere.errors import ConfigError
from facesphere.gallery.backend import is_url
from facesphere.paths import facesphere_home

GALLERIES_DIR = "galleries"
GALLERY_SUFFIX = ".sqlite"
PATH_SUFFIXES = (".sqlite", ".sqlite3", ".db")
GALLERY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def default_galleries_dir() -> Path:
    """The galleries folder unless one is given: `$FACESPHERE_HOME/galleries`."""
    return facesphere_home() / GALLERIES_DIR


def valid_gallery_name(name: str) -> bool:
    """Whether `name` may name a gallery: letters, digits, `_`, `-` and `.` (not leading)."""
    return bool(GALLERY_NAME.match(name)) and name not in (".", "..")


def gallery_file(name: str, folder: str | Path | None = None) -> Path:
    """The file of gallery `name` in `folder` (default: `default_galleries_dir()`);
    ConfigError for an invalid name."""
    if not valid_gallery_name(name):
        raise ConfigError(
            f"invalid gallery name {name!r}: use letters, digits, '_', '-' and '.' (or give a "
            f"path: one holding '/' or ending in {', '.join(PATH_SUFFIXES)})"
        )
    base = default_galleries_dir() if folder is None else Path(folder).expanduser()
    return base / f"{name}{GALLERY_SUFFIX}"


def gallery_names(folder: str | Path) -> list[str]:
    """The names of the galleries in `folder`, sorted (none when it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = [
        p.name[: -len(GALLERY_SUFFIX)] for p in folder.glob(f"*{GALLERY_SUFFIX}") if p.is_file()
    ]
    return sorted(n for n in names if valid_gallery_name(n))


def resolve_gallery(argument: str, folder: str | Path | None = None) -> str | Path:
    """The gallery a CLI gallery argument means: a URL as it is (a string), itself when it
    looks like a path (a folder separator, or a database suffix), else the file of the gallery
    of that name in `folder`."""
    if is_url(argument):
        return argument
    separators = {os.sep, "/", *([os.altsep] if os.altsep else [])}
    if any(s in argument for s in separators) or argument.lower().endswith(PATH_SUFFIXES):
        return Path(argument).expanduser()
    return gallery_file(argument, folder)
