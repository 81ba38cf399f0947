"""The embedded back end: one SQLite file, searched with a FAISS index kept beside it.

The database is the source of truth; the vector index next to it (`<path>.index/`) is a cache
that is checked against the database's generation counter before each search and brought up to
date (or rebuilt) when another process or instance changed the faces.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.gallery.backend import (
    FaceSource,
    GalleryBackend,
    GalleryMeta,
    now,
    register_backend,
)
from facesphere.gallery.errors import (
    GalleryError,
    GalleryNotFoundError,
    NotAGalleryError,
    SubjectExistsError,
    SubjectNotFoundError,
    duplicate_photo,
)
from facesphere.gallery.index import FaceIndex
from facesphere.gallery.records import FaceRecord, Match, Subject
from facesphere.gallery.rules import merge_metadata
from facesphere.gallery.schema import (
    NEW,
    SCHEMA,
    SCHEMA_VERSION,
    UNMARKED,
    connect,
    has_thumbnails,
    inspect_file,
    mark,
    migrate,
)
from facesphere.paths import create_private

# Rows fetched per round trip when reading embeddings, and ids per `IN (...)` list.
_FETCH_ROWS = 20_000
_IN_CHUNK = 500


def _file_id(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


@register_backend("sqlite")
class SqliteBackend(GalleryBackend):
    """A gallery in the SQLite file at `target` (which must exist; see `create`): WAL journal,
    one transaction per request, generation-checked FAISS index."""

    def __init__(self, target: str | Path) -> None:
        self.path = Path(target)
        self.location = str(self.path)
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "not found"
            raise GalleryNotFoundError(
                f"gallery {what}: {self.path} (create it with `facesphere gallery create`)"
            )
        try:
            kind = inspect_file(self.path)  # before connecting: that switches the file to WAL
        except NotAGalleryError as exc:
            raise NotAGalleryError(f"cannot open gallery: {exc}") from None
        if kind == NEW:
            raise NotAGalleryError(
                f"cannot open gallery: {self.path} is not a facesphere gallery (it is empty)"
            )
        self._closed = False
        try:
            self._file_id = _file_id(self.path)
            self._conn = connect(self.path)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise GalleryError(f"cannot open gallery {self.path}: {exc}") from exc
        try:
            meta = self._read_meta()
            if kind == UNMARKED:
                self._mark_unmarked()
            self._thumbnails = self._upgrade()
        except BaseException:
            self._conn.close()
            raise
        self.meta = GalleryMeta(
            meta["gallery_id"],
            meta["model"],
            meta["model_version"],
            int(meta["dim"]),
            meta.get("created_at", ""),
            meta.get("card"),
        )
        self.dim = self.meta.dim
        self.index_dir = Path(f"{self.path}.index")
        self._index: FaceIndex | None = None
        self._dirty = False

    # -- creation and opening ----------------------------------------------------------------

    @classmethod
    def exists(cls, target: str | Path) -> bool:
        return inspect_file(Path(target)) != NEW

    @classmethod
    def create(cls, target: str | Path, meta: GalleryMeta) -> bool:
        """Make the gallery's tables and meta rows, owner-only; whether another process had
        made them first."""
        path = Path(target)
        if cls.exists(path):
            return True
        try:
            create_private(path)
        except OSError as exc:
            raise GalleryError(f"cannot create gallery {path}: {exc.strerror or exc}") from exc
        try:
            conn = connect(path)
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"cannot create gallery {path}: {exc}") from exc
        try:
            conn.executescript(SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            try:
                existing = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if not existing:
                    mark(conn)
                    rows = {
                        "schema_version": str(SCHEMA_VERSION),
                        "gallery_id": meta.gallery_id,
                        "model": meta.model,
                        "model_version": meta.model_version,
                        "dim": str(meta.dim),
                        "generation": "0",
                        "created_at": meta.created_at,
                    }
                    if meta.card_json is not None:
                        rows["card"] = meta.card_json
                    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"cannot create gallery {path}: {exc}") from exc
        finally:
            conn.close()
        return bool(existing)

    def _mark_unmarked(self) -> None:
        """Give a gallery made before the mark existed its mark (when the file is writable:
        a read-only one is still recognised by its tables)."""
        with contextlib.suppress(sqlite3.OperationalError), self._transaction(write=True) as conn:
            mark(conn)

    def _upgrade(self) -> bool:
        """Migrate a gallery of an older schema (when the file is writable: a read-only one is
        read as it is); whether its faces have the thumbnail column."""
        if not has_thumbnails(self._conn):
            with (
                contextlib.suppress(sqlite3.OperationalError),
                self._transaction(write=True) as conn,
            ):
                migrate(conn)
        return has_thumbnails(self._conn)

    def _read_meta(self) -> dict[str, str]:
        try:
            with self._transaction():
                names = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
                if "meta" not in names or "faces" not in names:
                    raise NotAGalleryError(f"{self.path} is not a facesphere gallery")
                meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"cannot open gallery {self.path}: {exc}") from exc
        missing = {"gallery_id", "model", "model_version", "dim", "generation"} - set(meta)
        if missing:
            raise NotAGalleryError(f"{self.path} is not a facesphere gallery (no {min(missing)})")
        if int(meta.get("schema_version", "0")) > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path} has schema version {meta['schema_version']}; this facesphere "
                f"reads up to {SCHEMA_VERSION}"
            )
        return meta

    def close(self) -> None:
        """Save the index if it changed (and the gallery's file is still there), and close the
        database."""
        if self._closed:
            return
        try:
            if self._dirty and self.present():
                self._try_save_index()
        finally:
            self._conn.close()
            self._closed = True

    def face_count(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def subject_count(self) -> int:
        query = "SELECT COUNT(DISTINCT subject_id) FROM faces"
        return int(self._db().execute(query).fetchone()[0])

    # -- transactions ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction: IMMEDIATE (takes the write lock at once) for writes, a consistent
        snapshot for reads; rolled back on any exception."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _db(self) -> sqlite3.Connection:
        """The connection, once sure the gallery is open and its file is still the one opened
        (GalleryNotFoundError when it was deleted or replaced meanwhile)."""
        if self._closed:
            raise GalleryError(f"gallery {self.path} is closed")
        if not self.present():
            raise GalleryNotFoundError(f"gallery {self.path} was removed or replaced while open")
        return self._conn

    def present(self) -> bool:
        """Whether the file this gallery opened is still at its path."""
        try:
            return _file_id(self.path) == self._file_id
        except OSError:
            return False

    def delete(self) -> None:
        """Close the gallery and remove every file that holds it: the database, SQLite's side
        files and the index folder. A process that still has it open stops finding it."""
        self._dirty = False  # nothing to save into a gallery being removed
        self.close()
        for path in self.files():
            path.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.index_dir.rmdir()

    def files(self) -> list[Path]:
        """The files that hold this gallery: the database, SQLite's side files and the index's."""
        side = [Path(f"{self.path}{suffix}") for suffix in ("-wal", "-shm", "-journal")]
        index = sorted(self.index_dir.iterdir()) if self.index_dir.is_dir() else []
        return [self.path, *side, *index]

    @staticmethod
    def _generation(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def generation(self) -> int:
        return self._generation(self._db())

    # -- writing -----------------------------------------------------------------------------

    def enroll(
        self,
        names: list[str],
        normal: str,
        vectors: np.ndarray,
        sources: Sequence[FaceSource],
        thumbnails: Sequence[bytes | None],
        metadata: dict[str, Any] | None,
        create_subject: bool,
        created: str,
    ) -> list[int]:
        digests = [row[0] for row in sources if row[0] is not None]
        with self._transaction(write=True) as conn:
            before = self._generation(conn)
            subject_id = self._subject_for_write(conn, names, normal, metadata, create_subject)
            self._refuse_enrolled(conn, subject_id, digests)
            ids = [
                self._insert_face(conn, subject_id, vector, row, thumbnail, created)
                for vector, row, thumbnail in zip(vectors, sources, thumbnails)
            ]
            after = self._generation(conn)
        self._after_write(before, after, added=(np.array(ids, np.int64), vectors))
        return ids

    def add_subject(self, names: list[str], normal: str, metadata: dict[str, Any] | None) -> None:
        with self._transaction(write=True) as conn:
            if self._find_subject(conn, names) is not None:
                raise SubjectExistsError(f"subject {normal!r} already exists")
            self._subject_for_write(conn, names, normal, metadata, create=True)

    def update_metadata(self, names: list[str], metadata: dict[str, Any] | None) -> None:
        with self._transaction(write=True) as conn:
            self._subject_for_write(conn, names, names[0], metadata, create=False)

    @staticmethod
    def _find_subject(conn: sqlite3.Connection, names: list[str]) -> tuple[int, str, str] | None:
        """(id, stored name, metadata) of the first of `names` stored."""
        for candidate in names:
            row = conn.execute(
                "SELECT id, name, metadata FROM subjects WHERE name = ?", (candidate,)
            ).fetchone()
            if row is not None:
                return row
        return None

    @classmethod
    def _subject_for_write(
        cls,
        conn: sqlite3.Connection,
        names: list[str],
        normal: str,
        metadata: dict[str, Any] | None,
        create: bool,
    ) -> int:
        """The id of the subject `names` addresses, created as `normal` when new and `create`;
        `metadata` merged into its own."""
        row = cls._find_subject(conn, names)
        if row is None:
            if not create:
                raise SubjectNotFoundError(f"no subject named {names[0]!r}")
            cursor = conn.execute(
                "INSERT INTO subjects (name, metadata, created_at) VALUES (?, ?, ?)",
                (normal, json.dumps(metadata or {}), now()),
            )
            return int(cursor.lastrowid)
        if metadata:
            merged = merge_metadata(json.loads(row[2]), metadata)
            conn.execute(
                "UPDATE subjects SET metadata = ? WHERE id = ?", (json.dumps(merged), row[0])
            )
        return int(row[0])

    @staticmethod
    def _refuse_enrolled(conn: sqlite3.Connection, subject_id: int, digests: list[str]) -> None:
        """DuplicateFaceError if a photo of `digests` is enrolled for the subject already."""
        for start in range(0, len(digests), _IN_CHUNK):
            chunk = digests[start : start + _IN_CHUNK]
            row = conn.execute(
                "SELECT source_sha256 FROM faces WHERE subject_id = ? AND source_sha256 IN"
                f" ({','.join('?' * len(chunk))}) LIMIT 1",
                (subject_id, *chunk),
            ).fetchone()
            if row is not None:
                raise duplicate_photo(row[0])

    def enrolled_photos(self, names: list[str]) -> set[str]:
        with self._transaction() as conn:
            row = self._find_subject(conn, names)
            if row is None:
                return set()
            query = "SELECT source_sha256 FROM faces WHERE subject_id = ?"
            return {r[0] for r in conn.execute(query, (row[0],)) if r[0] is not None}

    def face_thumbnail(self, face_id: int) -> bytes | None:
        if not self._thumbnails:
            return None  # a read-only gallery of schema version 1: no thumbnail column
        query = "SELECT thumbnail FROM faces WHERE id = ?"
        row = self._db().execute(query, (face_id,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def _insert_face(
        self,
        conn: sqlite3.Connection,
        subject_id: int,
        vector: np.ndarray,
        source: FaceSource,
        thumbnail: bytes | None,
        created: str,
    ) -> int:
        cursor = conn.execute(
            "INSERT INTO faces (subject_id, embedding, model, model_version, source_sha256,"
            " x1, y1, x2, y2, score, created_at, thumbnail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                subject_id,
                vector.astype("<f4").tobytes(),
                self.meta.model,
                self.meta.model_version,
                *source,
                created,
                thumbnail,
            ),
        )
        return int(cursor.lastrowid)

    # -- removal -----------------------------------------------------------------------------

    def remove_subject(self, names: list[str]) -> int:
        """Delete a subject and its faces (database first, then the index)."""
        with self._transaction(write=True) as conn:
            before = self._generation(conn)
            found = self._find_subject(conn, names)
            if found is None:
                raise SubjectNotFoundError(f"no subject named {names[0]!r}")
            row = (found[0],)
            face_ids = np.array(
                [r[0] for r in conn.execute("SELECT id FROM faces WHERE subject_id = ?", row)],
                np.int64,
            )
            conn.execute("DELETE FROM faces WHERE subject_id = ?", row)
            conn.execute("DELETE FROM subjects WHERE id = ?", row)
            after = self._generation(conn)
        self._after_write(before, after, removed=face_ids)
        return len(face_ids)

    def remove_faces(self, face_ids: list[int]) -> int:
        with self._transaction(write=True) as conn:
            before = self._generation(conn)
            gone: list[int] = []
            for start in range(0, len(face_ids), _IN_CHUNK):
                chunk = face_ids[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                gone += [
                    r[0] for r in conn.execute(f"SELECT id FROM faces WHERE id IN ({marks})", chunk)
                ]
                conn.execute(f"DELETE FROM faces WHERE id IN ({marks})", chunk)
            after = self._generation(conn)
        self._after_write(before, after, removed=np.array(gone, np.int64))
        return len(gone)

    def _after_write(
        self,
        before: int,
        after: int,
        added: tuple[np.ndarray, np.ndarray] | None = None,
        removed: np.ndarray | None = None,
    ) -> None:
        """Apply a committed change to the loaded index, if the index was current before it;
        otherwise leave the index to be synced with the database at the next search."""
        index = self._index
        if index is None or index.generation != before or after == before:
            return
        if removed is not None and len(removed):
            index.remove(removed)
        if added is not None:
            index.add(*added)
        index.generation = after
        if index.needs_rebuild():
            self._index = index.compacted()
        self._dirty = True

    # -- the index ---------------------------------------------------------------------------

    def _read_embeddings(
        self, conn: sqlite3.Connection, where: str = "", args: Sequence[Any] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        cursor = conn.execute(f"SELECT id, embedding FROM faces {where} ORDER BY id", args)
        width = self.dim * 4
        id_parts: list[np.ndarray] = [np.zeros(0, np.int64)]
        vector_parts: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)]
        while batch := cursor.fetchmany(_FETCH_ROWS):
            if any(len(blob) != width for _, blob in batch):
                raise GalleryError(
                    f"{self.path}: a stored embedding is not {self.dim} float32 values"
                )
            id_parts.append(np.array([face_id for face_id, _ in batch], np.int64))
            joined = b"".join(blob for _, blob in batch)
            vector_parts.append(np.frombuffer(joined, "<f4").reshape(-1, self.dim))
        vectors = np.concatenate(vector_parts).astype(np.float32, copy=False)
        return np.concatenate(id_parts), vectors

    def _rebuild_index(self) -> FaceIndex:
        with self._transaction() as conn:
            generation = self._generation(conn)
            ids, vectors = self._read_embeddings(conn)
        index = FaceIndex.build(self.dim, ids, vectors, generation)
        self._index = index
        self._dirty = True
        self._try_save_index()
        return index

    def _refresh_index(self, index: FaceIndex) -> FaceIndex:
        """Bring `index` to the database's current content by the difference of face ids."""
        with self._transaction() as conn:
            generation = self._generation(conn)
            db_ids = np.array([r[0] for r in conn.execute("SELECT id FROM faces")], np.int64)
            have = index.live_ids()
            gone = np.setdiff1d(have, db_ids, assume_unique=True)
            new = np.setdiff1d(db_ids, have, assume_unique=True)
            if len(new) and (len(have) == 0 or new.min() > have.max()):
                new_ids, vectors = self._read_embeddings(conn, "WHERE id >= ?", (int(new.min()),))
            else:
                parts = [
                    self._read_embeddings(conn, *self._in_clause(new[i : i + _IN_CHUNK]))
                    for i in range(0, len(new), _IN_CHUNK)
                ]
                new_ids = np.concatenate([p[0] for p in parts]) if parts else new[:0]
                vectors = (
                    np.concatenate([p[1] for p in parts])
                    if parts
                    else np.zeros((0, self.dim), np.float32)
                )
        index.remove(gone)
        index.add(new_ids, vectors)
        index.generation = generation
        if index.needs_rebuild():
            index = index.compacted()
        self._index = index
        self._dirty = True
        return index

    @staticmethod
    def _in_clause(ids: np.ndarray) -> tuple[str, list[int]]:
        return f"WHERE id IN ({','.join('?' * len(ids))})", [int(i) for i in ids]

    def _current_index(self) -> FaceIndex:
        """The index, loaded or rebuilt if needed and synced with the database."""
        index = self._index
        if index is None:
            index = FaceIndex.load(self.index_dir, self.meta.gallery_id, self.dim)
            if index is None:
                return self._rebuild_index()
            self._index = index
            count, max_id = self._db().execute("SELECT COUNT(*), MAX(id) FROM faces").fetchone()
            live = index.live_ids()
            if index.generation == self.generation() and (
                count == len(live) and (count == 0 or int(live[-1]) == max_id)
            ):
                return index
            index.generation = -1  # disagrees with the database: sync by face ids
        if index.generation != self.generation():
            index = self._refresh_index(index)
        return index

    def index_status(self) -> dict[str, Any]:
        """Load, check and bring the FAISS index up to date now; a short description."""
        index = self._current_index()
        return {
            "kind": index.kind,
            "faces": index.live,
            "removed_marks": index.dead,
            "generation": index.generation,
        }

    def rebuild_index(self) -> None:
        """Rebuild the index from the database and save it."""
        self._rebuild_index()

    def save_index(self) -> None:
        """Write the loaded index next to the database (nothing to do if none is loaded)."""
        if self._index is None:
            return
        try:
            self._index.save(self.index_dir, self.meta.gallery_id)
        except OSError as exc:
            raise GalleryError(f"cannot save the index {self.index_dir}: {exc}") from exc
        self._dirty = False

    def _try_save_index(self) -> None:
        """Save the index, only warning on failure: it is a cache that the next opening
        rebuilds from the database, so nothing is lost."""
        try:
            self.save_index()
        except GalleryError as exc:
            warnings.warn(f"{exc}; it will be rebuilt from the database", stacklevel=3)

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        index = self._current_index()
        return [self._search_one(index, query, top_k) for query in queries]

    def _search_one(self, index: FaceIndex, query: np.ndarray, top_k: int) -> list[Match]:
        # With max aggregation the top k subjects are the first k distinct subjects among the
        # nearest faces, so widen the search until k subjects turn up or all faces were seen.
        wanted = max(4 * top_k, 16)
        best: dict[int, tuple[float, int]] = {}
        names: dict[int, str] = {}
        while True:
            scores, face_ids = index.search(query, wanted)
            hits = [(float(s), int(f)) for s, f in zip(scores[0], face_ids[0]) if f >= 0]
            owners = self._owners([f for _, f in hits])
            best.clear()
            for score, face_id in hits:
                owner = owners.get(face_id)
                if owner is None:
                    continue  # removed by another process since the index was synced
                subject_id, names[subject_id] = owner
                if subject_id not in best or score > best[subject_id][0]:
                    best[subject_id] = (score, face_id)
            if len(best) >= top_k or wanted >= index.live:
                break
            wanted = min(index.live, wanted * 4)
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[:top_k]
        return [Match(names[sid], score, fid) for sid, (score, fid) in ranked]

    def _owners(self, face_ids: list[int]) -> dict[int, tuple[int, str]]:
        owners: dict[int, tuple[int, str]] = {}
        for start in range(0, len(face_ids), _IN_CHUNK):
            chunk = face_ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for face_id, subject_id, name in self._db().execute(
                "SELECT f.id, f.subject_id, s.name FROM faces f JOIN subjects s"
                f" ON s.id = f.subject_id WHERE f.id IN ({marks})",
                chunk,
            ):
                owners[face_id] = (subject_id, name)
        return owners

    # -- reading -----------------------------------------------------------------------------

    def subjects(self) -> list[Subject]:
        query = (
            "SELECT s.id, s.name, s.metadata, s.created_at, COUNT(f.id), MIN(f.id) FROM subjects s"
            " LEFT JOIN faces f ON f.subject_id = s.id GROUP BY s.id ORDER BY s.name"
        )
        rows = self._db().execute(query).fetchall()
        return [Subject(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def subject(self, names: list[str]) -> Subject | None:
        conn = self._db()
        found = self._find_subject(conn, names)
        if found is None:
            return None
        row = conn.execute(
            "SELECT s.id, s.name, s.metadata, s.created_at, COUNT(f.id), MIN(f.id)"
            " FROM subjects s LEFT JOIN faces f ON f.subject_id = s.id WHERE s.id = ?"
            " GROUP BY s.id",
            (found[0],),
        ).fetchone()
        return Subject(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def faces(self, subject_id: int | None, embeddings: bool) -> list[FaceRecord]:
        query = (
            "SELECT f.id, s.name, f.model, f.model_version, f.source_sha256, f.x1, f.y1, f.x2,"
            " f.y2, f.score, f.created_at, f.embedding FROM faces f JOIN subjects s"
            " ON s.id = f.subject_id"
        )
        args: tuple[Any, ...] = ()
        if subject_id is not None:
            query += " WHERE s.id = ?"
            args = (subject_id,)
        rows = self._db().execute(query + " ORDER BY f.id", args).fetchall()
        records = []
        for r in rows:
            box = None if r[5] is None else [r[5], r[6], r[7], r[8]]
            vector = np.frombuffer(r[11], dtype="<f4").astype(np.float32) if embeddings else None
            records.append(FaceRecord(r[0], r[1], r[2], r[3], r[4], box, r[9], r[10], vector))
        return records

    def state(self) -> dict[str, int]:
        with self._transaction() as conn:
            return self._state(conn)

    def snapshot(self) -> tuple[dict[str, int], list[Subject], list[FaceRecord]]:
        with self._transaction() as conn:
            return self._state(conn), self.subjects(), self.faces(None, embeddings=True)

    def _state(self, conn: sqlite3.Connection) -> dict[str, int]:
        return {
            "schema_version": SCHEMA_VERSION,
            "subjects": conn.execute("SELECT COUNT(*) FROM subjects").fetchone()[0],
            "faces": conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0],
            "generation": self._generation(conn),
        }
