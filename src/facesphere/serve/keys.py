"""API keys of the REST service, stored hashed in `facesphere_home()/keys.sqlite`.

A key reads `fs_<id>_<secret>`: the id is public (it names the key in lists and logs), the
secret is only shown once, when the key is made; the file keeps its SHA-256 digest, and a
presented key is checked with a constant-time comparison. A key's scope is `read` (detect,
embed, verify, identify, list) or `write` (which also changes galleries); a key may be limited
to one gallery.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facesphere.errors import ServiceError
from facesphere.gallery.folder import valid_gallery_name
from facesphere.paths import facesphere_home

KEYS_FILE = "keys.sqlite"
SCOPES = ("read", "write")
KEY_PREFIX = "fs"

_ID_BYTES = 6
_SECRET_BYTES = 32
_KEY_SHAPE = re.compile(r"^fs_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    gallery TEXT,
    secret_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name)
    WHERE revoked_at IS NULL;
"""


class KeyStoreError(ServiceError):
    """A key operation could not be done; the message says why."""


class KeyNotFoundError(KeyStoreError):
    """No active key with that id or name."""


class KeyFileError(KeyStoreError):
    """The key file cannot be opened or read (a fault of the installation, not of the request)."""

    exit_code = 1
    http_status = 500


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _digest(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    scope: str
    gallery: str | None
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str, gallery: str | None = None) -> bool:
        """Whether this key may act with `scope` (on `gallery`, when one is named)."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if scope == "write" and self.scope != "write":
            return False
        return self.gallery is None or gallery is None or gallery == self.gallery

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (no secret: it is not stored)."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "gallery": self.gallery,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


class KeyStore:
    """The API keys in one SQLite file (created on first write, readable by its owner only)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else facesphere_home() / KEYS_FILE

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not write and not self.path.is_file():
            raise FileNotFoundError(self.path)
        if write and not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Made with owner-only permissions before SQLite writes to it.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise KeyFileError(f"cannot open the key file {self.path}: {exc}") from exc
        try:
            if write:
                conn.executescript(_SCHEMA)
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise KeyFileError(f"key file {self.path}: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    @staticmethod
    def _row_to_key(row: tuple[Any, ...]) -> ApiKey:
        return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5])

    def create(
        self, name: str, scope: str = "read", gallery: str | None = None
    ) -> tuple[ApiKey, str]:
        """Make a key; returns it and the full key string (shown once, never stored)."""
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > 200:
            raise KeyStoreError("a key needs a name of 1 to 200 characters")
        if scope not in SCOPES:
            raise KeyStoreError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if gallery is not None and not valid_gallery_name(gallery):
            raise KeyStoreError(
                f"invalid gallery name {gallery!r} (letters, digits, '_', '-' and '.')"
            )
        key_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        key = ApiKey(key_id, name, scope, gallery, _now())
        with self._connect(write=True) as conn:
            taken = conn.execute(
                "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)
            ).fetchone()
            if taken:
                raise KeyStoreError(f"an active key is already named {name!r}")
            conn.execute(
                "INSERT INTO api_keys (id, name, scope, gallery, secret_sha256, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, scope, gallery, _digest(key_id, secret), key.created_at),
            )
        return key, f"{KEY_PREFIX}_{key_id}_{secret}"

    def list_keys(self, include_revoked: bool = False) -> list[ApiKey]:
        """The keys, oldest first (active ones only unless `include_revoked`)."""
        query = "SELECT id, name, scope, gallery, created_at, revoked_at FROM api_keys"
        if not include_revoked:
            query += " WHERE revoked_at IS NULL"
        try:
            with self._connect() as conn:
                rows = conn.execute(query + " ORDER BY created_at, rowid").fetchall()
        except FileNotFoundError:
            return []
        except KeyFileError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [self._row_to_key(r) for r in rows]

    def revoke(self, id_or_name: str) -> ApiKey:
        """Revoke the active key with this id (or else this name); returns it."""
        with self._connect(write=True) as conn:
            row = None
            for column in ("id", "name"):
                row = conn.execute(
                    "SELECT id, name, scope, gallery, created_at, revoked_at FROM api_keys"
                    f" WHERE {column} = ? AND revoked_at IS NULL",
                    (id_or_name,),
                ).fetchone()
                if row is not None:
                    break
            if row is None:
                raise KeyNotFoundError(f"no active key with id or name {id_or_name!r}")
            revoked = _now()
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (revoked, row[0]))
        return self._row_to_key((*row[:5], revoked))

    def authenticate(self, key: str) -> ApiKey | None:
        """The active key that `key` is, or None (wrong shape, unknown, revoked or wrong)."""
        match = _KEY_SHAPE.match(key or "")
        if match is None:
            return None
        key_id, secret = match.groups()
        try:
            with self._connect() as conn:
                row = conn.execute(
                    "SELECT id, name, scope, gallery, created_at, revoked_at, secret_sha256"
                    " FROM api_keys WHERE id = ?",
                    (key_id,),
                ).fetchone()
        except FileNotFoundError:
            return None
        except KeyFileError as exc:
            if "no such table" in str(exc):
                return None
            raise
        # Compare even when the id is unknown, so that timing says nothing about ids.
        stored = row[6] if row is not None else "0" * 64
        if not hmac.compare_digest(stored, _digest(key_id, secret)):
            return None
        if row is None or row[5] is not None:
            return None
        return self._row_to_key(row[:6])
