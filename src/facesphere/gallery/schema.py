"""The SQLite schema of a gallery, how a file is recognised as one, and how connections to it
are opened."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from facesphere.gallery.errors import NotAGalleryError

# Version 2 added `faces.thumbnail` (see `migrate`).
SCHEMA_VERSION = 2
# `PRAGMA application_id` of a gallery ("FSGY"), with `PRAGMA user_version` = SCHEMA_VERSION:
# marks a facesphere gallery in the SQLite header, so that no other database is taken for one.
APPLICATION_ID = 0x46534759
# The tables of a gallery; an unmarked database with exactly these (made before the mark
# existed) is a gallery too, and gets the mark when opened.
GALLERY_TABLES = frozenset({"meta", "subjects", "faces"})
_SQLITE_HEADER = b"SQLite format 3\x00"

# What `inspect_file` finds at a path.
NEW = "new"  # nothing yet, an empty file or an empty SQLite database: a gallery may be made
MARKED = "marked"  # a gallery with the mark
UNMARKED = "unmarked"  # a gallery made before the mark

# How long a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_MS = 60_000

# Every insert or delete of a face bumps `generation` (by triggers, so that even edits made
# outside this package are seen); a saved vector index records the generation it matches.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subjects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    source_sha256 TEXT,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL,
    score REAL,
    created_at TEXT NOT NULL,
    thumbnail BLOB
);
CREATE INDEX IF NOT EXISTS faces_by_subject ON faces(subject_id);
CREATE TRIGGER IF NOT EXISTS faces_inserted AFTER INSERT ON faces BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation';
END;
CREATE TRIGGER IF NOT EXISTS faces_deleted AFTER DELETE ON faces BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation';
END;
"""


def inspect_file(path: Path) -> str:
    """NEW, MARKED or UNMARKED (see above), without changing the file; NotAGalleryError for
    anything else: not a file, not SQLite, another application's database."""
    if not path.exists():
        return NEW
    if not path.is_file():
        raise NotAGalleryError(f"{path} is not a file")
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise NotAGalleryError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not header:
        return NEW
    if header != _SQLITE_HEADER:
        raise NotAGalleryError(f"{path} is not a facesphere gallery (not an SQLite database)")
    try:
        # A plain connection only reads: no journal mode is set, no table made.
        with contextlib.closing(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)) as conn:
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                )
            }
    except sqlite3.DatabaseError as exc:
        raise NotAGalleryError(f"{path} is not a readable SQLite database: {exc}") from exc
    if application_id == APPLICATION_ID:
        return MARKED
    if application_id != 0:
        raise NotAGalleryError(
            f"{path} is another application's database (application id {application_id:#x})"
        )
    if not tables:
        return NEW
    if tables == GALLERY_TABLES:
        return UNMARKED
    raise NotAGalleryError(
        f"{path} is not a facesphere gallery (it holds the tables {', '.join(sorted(tables))})"
    )


def mark(conn: sqlite3.Connection) -> None:
    """Stamp the database as a gallery of this schema version."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def has_thumbnails(conn: sqlite3.Connection) -> bool:
    """Whether the faces table has its `thumbnail` column (schema version 2 on)."""
    return any(row[1] == "thumbnail" for row in conn.execute("PRAGMA table_info(faces)"))


def migrate(conn: sqlite3.Connection) -> None:
    """Bring an older gallery up to SCHEMA_VERSION inside the caller's write transaction:
    version 2 adds the nullable `faces.thumbnail` (old faces keep none)."""
    if not has_thumbnails(conn):
        conn.execute("ALTER TABLE faces ADD COLUMN thumbnail BLOB")
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    mark(conn)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL journal, foreign keys
    on, and a busy timeout so that concurrent writers queue instead of failing."""
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise sqlite3.OperationalError(f"cannot switch {path} to WAL mode (got {mode})")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn
