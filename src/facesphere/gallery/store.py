"""`Gallery`: enrolled subjects and their face embeddings in SQLite, searched with FAISS.

The database is the source of truth; the vector index next to it (`<path>.index/`) is a cache
that is checked against the database's generation counter before each search and brought up to
date (or rebuilt) when another process or instance changed the faces.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.cards import ModelCard, Threshold
from facesphere.errors import ConfigError
from facesphere.gallery.errors import (
    DuplicateFaceError,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    ModelMismatchError,
    NotAGalleryError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from facesphere.gallery.index import FaceIndex
from facesphere.gallery.rules import check_metadata, lookup_names, subject_name
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

DEFAULT_MODEL = "dlib-resnet"
DEFAULT_MODEL_VERSION = "1"
DEFAULT_DIM = 128

# How far from 1 the norm of an embedding taken as already unit may be (float32 rounding).
_UNIT_TOLERANCE = 1e-6
# Rows fetched per round trip when reading embeddings, and ids per `IN (...)` list.
_FETCH_ROWS = 20_000
_IN_CHUNK = 500


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Subject:
    """An enrolled person: name, free-form metadata and how many faces it has."""

    id: int
    name: str
    metadata: dict[str, Any]
    created_at: str
    face_count: int
    first_face_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "name": self.name,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "faces": self.face_count,
            "first_face_id": self.first_face_id,
        }


@dataclass
class FaceRecord:
    """One enrolled face; `embedding` is filled only when asked for."""

    id: int
    subject: str
    model: str
    model_version: str
    sha256: str | None
    box: list[float] | None
    score: float | None
    created_at: str
    embedding: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self, with_embedding: bool = False) -> dict[str, Any]:
        """JSON-ready description (embedding as a list when `with_embedding`)."""
        data: dict[str, Any] = {
            "id": self.id,
            "subject": self.subject,
            "model": self.model,
            "model_version": self.model_version,
            "sha256": self.sha256,
            "box": self.box,
            "score": self.score,
            "created_at": self.created_at,
        }
        if with_embedding and self.embedding is not None:
            data["embedding"] = [float(v) for v in self.embedding]
        return data


@dataclass
class Match:
    """A subject's score for a query: the best cosine similarity over its faces."""

    subject: str
    score: float
    face_id: int

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "score": round(self.score, 6)}


@dataclass
class Identification:
    """Who a query face is: `identity` is the best subject if its score reaches the threshold,
    else None (unknown); `matches` are the top subjects, best first."""

    identity: str | None
    score: float | None
    threshold: float
    matches: list[Match]

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "score": None if self.score is None else round(self.score, 6),
            "matches": [m.to_dict() for m in self.matches],
        }


def _file_id(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _source_fields(source: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """(sha256, x1, y1, x2, y2, score) of one face's source description."""
    if source is None:
        return (None,) * 6
    if not isinstance(source, Mapping):
        raise GalleryError(f"a face source must be a mapping, not {type(source).__name__}")
    unknown = set(source) - {"sha256", "box", "score"}
    if unknown:
        raise GalleryError(f"unknown face source field(s): {', '.join(sorted(unknown))}")
    sha = source.get("sha256")
    if sha is not None and not isinstance(sha, str):
        raise GalleryError("a face source's sha256 must be a hex string")
    box = source.get("box")
    if box is None:
        coords: tuple[float | None, ...] = (None,) * 4
    else:
        values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise GalleryError(f"a face box must be 4 finite numbers, got {box!r}")
        coords = tuple(values)
    score = source.get("score")
    score = None if score is None else float(score)
    return (sha, *coords, score)


class Gallery:
    """A face gallery stored in one SQLite file at `path` (which must exist; see `create`).

    Thread-safe (one lock per instance) and safe to share between processes (WAL journal,
    one transaction per request, generation-checked index).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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
        self._lock = threading.RLock()
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
        self.gallery_id: str = meta["gallery_id"]
        self.model: str = meta["model"]
        self.model_version: str = meta["model_version"]
        self.dim: int = int(meta["dim"])
        self.created_at: str = meta.get("created_at", "")
        self._card_json = meta.get("card")
        self.index_dir = Path(f"{self.path}.index")
        self._index: FaceIndex | None = None
        self._dirty = False

    # -- creation and opening ----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        model: str = DEFAULT_MODEL,
        model_version: str = DEFAULT_MODEL_VERSION,
        dim: int = DEFAULT_DIM,
        exist_ok: bool = False,
        card: ModelCard | None = None,
    ) -> Gallery:
        """Create a gallery for `dim`-d embeddings of `model` (version `model_version`), or of
        the model of `card` (stored with the gallery: its thresholds decide identification).

        An existing gallery is opened when `exist_ok` and it was made for the same model,
        version and dimension; otherwise GalleryExistsError / ModelMismatchError.
        """
        if card is not None:
            model, model_version = card.name, card.version
            dim = int(card.embedding_dim or 0)
        path = Path(path)
        if not model or not str(model).strip():
            raise GalleryError("the model name must not be empty")
        if int(dim) < 1:
            raise GalleryError(f"the embedding dimension must be positive, got {dim}")
        existing = inspect_file(path) != NEW or cls._create_file(
            path, model, model_version, dim, card
        )
        if existing:
            if not exist_ok:
                raise GalleryExistsError(f"a gallery already exists at {path}")
            gallery = cls(path)
            try:
                gallery.check_model(model, model_version, dim)
            except BaseException:
                gallery.close()
                raise
            return gallery
        return cls(path)

    @staticmethod
    def _create_file(
        path: Path, model: str, model_version: str, dim: int, card: ModelCard | None
    ) -> bool:
        """Make the gallery's tables and meta rows, owner-only; whether another process had
        made them first."""
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
                        "gallery_id": uuid.uuid4().hex,
                        "model": str(model),
                        "model_version": str(model_version),
                        "dim": str(int(dim)),
                        "generation": "0",
                        "created_at": _now(),
                    }
                    if card is not None:
                        rows["card"] = card.to_json()
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
        with self._lock:
            if self._closed:
                return
            try:
                if self._dirty and self.on_disk():
                    self._try_save_index()
            finally:
                self._conn.close()
                self._closed = True

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def subject_count(self) -> int:
        """The number of subjects with at least one face (those a query can match)."""
        with self._lock:
            query = "SELECT COUNT(DISTINCT subject_id) FROM faces"
            return int(self._db().execute(query).fetchone()[0])

    def __repr__(self) -> str:
        return f"Gallery({str(self.path)!r}, model={self.model!r}, dim={self.dim})"

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
        if not self.on_disk():
            raise GalleryNotFoundError(f"gallery {self.path} was removed or replaced while open")
        return self._conn

    def on_disk(self) -> bool:
        """Whether the file this gallery opened is still at its path."""
        try:
            return _file_id(self.path) == self._file_id
        except OSError:
            return False

    def delete(self) -> None:
        """Close the gallery and remove every file that holds it: the database, SQLite's side
        files and the index folder. A process that still has it open stops finding it."""
        with self._lock:
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
        """The database's change counter (bumped by every face insert or delete)."""
        with self._lock:
            return self._generation(self._db())

    # -- checks ------------------------------------------------------------------------------

    @property
    def card(self) -> ModelCard | None:
        """The card of the gallery's model: the registered recognizer's of the same name and
        version (its calibration may be newer than the gallery), else the one stored at
        creation (None when neither exists)."""
        from facesphere.recognize.registry import RECOGNIZERS

        if self.model in RECOGNIZERS:
            card = RECOGNIZERS.card(self.model)
            if card is not None and card.version == self.model_version:
                return card
        if self._card_json:
            return ModelCard.from_json(self._card_json)
        return None

    def identification_threshold(self, fpir: float | None = None) -> Threshold:
        """The threshold naming `fpir` of strangers (default: the model card's) as someone in
        this gallery: it depends on the number of subjects enrolled (`ModelCard`)."""
        card = self.card
        if card is None:
            raise GalleryError(
                f"gallery {self.path} holds {self.model} embeddings without a model card; "
                "pass a threshold"
            )
        return card.identification_threshold(max(self.subject_count(), 1), fpir)

    def decision_threshold(
        self, threshold: float | None = None, fpir: float | None = None
    ) -> Threshold:
        """The threshold naming a face: `threshold` if given, else `identification_threshold`
        at `fpir`; ConfigError for both."""
        if threshold is not None and fpir is not None:
            raise ConfigError("give a threshold or an FPIR, not both")
        if threshold is not None:
            return Threshold.given(threshold)
        return self.identification_threshold(fpir)

    def check_model(
        self, model: str | None = None, model_version: str | None = None, dim: int | None = None
    ) -> None:
        """Raise ModelMismatchError unless the given model, version and dim (None: any) are
        the gallery's."""
        if model is not None and str(model) != self.model:
            raise ModelMismatchError(
                f"gallery {self.path} holds {self.model} embeddings, not {model}"
            )
        if model_version is not None and str(model_version) != self.model_version:
            raise ModelMismatchError(
                f"gallery {self.path} holds {self.model} version {self.model_version} "
                f"embeddings, not version {model_version}"
            )
        if dim is not None and int(dim) != self.dim:
            raise ModelMismatchError(
                f"gallery {self.path} holds {self.dim}-d embeddings, not {int(dim)}-d"
            )

    def _prepare(self, embeddings: Any) -> np.ndarray:
        """Embeddings as unit float32 rows (N, dim), or a GalleryError saying what is wrong."""
        try:
            vectors = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise GalleryError(f"embeddings must be numbers: {exc}") from exc
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2:
            raise GalleryError(f"embeddings must be (N, {self.dim}), got shape {vectors.shape}")
        self.check_model(dim=vectors.shape[1])
        if not np.isfinite(vectors).all():
            raise GalleryError("embeddings contain NaN or infinite values")
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
        if len(vectors) and float(norms.min()) < 1e-6:
            raise GalleryError("an embedding is (close to) the zero vector")
        # Unit vectors are kept bit for bit (an exported gallery imports unchanged).
        unit = np.abs(norms - 1.0) <= _UNIT_TOLERANCE
        return np.ascontiguousarray(np.where(unit, vectors, vectors / norms), dtype=np.float32)

    # -- enrollment --------------------------------------------------------------------------

    def enroll(
        self,
        subject: str,
        embeddings: Any,
        sources: Sequence[Mapping[str, Any] | None] | None = None,
        metadata: Mapping[str, Any] | None = None,
        create_subject: bool = True,
        model: str | None = None,
        model_version: str | None = None,
        thumbnails: Sequence[bytes | None] | None = None,
    ) -> list[int]:
        """Add faces of `subject` in one transaction (all or none); returns their face ids.

        embeddings: (N, dim) vectors (normalised here); sources: per face, a mapping with any
        of `sha256`, `box` (x1, y1, x2, y2) and `score`; thumbnails: per face, a small JPEG of
        it or None (see `face_thumbnail`); metadata: merged into the subject's;
        model / model_version: what made the embeddings (None: the gallery's own). A new
        subject's name and the metadata follow `gallery.rules` (else InvalidSubjectError); a
        photo (`sha256`) given twice or already enrolled for the subject: DuplicateFaceError.
        """
        self.check_model(model, model_version)
        name = subject_name(subject)
        vectors = self._prepare(embeddings)
        if len(vectors) == 0:
            raise GalleryError("no embeddings to enroll")
        if sources is None:
            sources = [None] * len(vectors)
        if len(sources) != len(vectors):
            raise GalleryError(f"{len(sources)} sources for {len(vectors)} embeddings")
        if thumbnails is None:
            thumbnails = [None] * len(vectors)
        if len(thumbnails) != len(vectors):
            raise GalleryError(f"{len(thumbnails)} thumbnails for {len(vectors)} embeddings")
        if not all(t is None or isinstance(t, bytes) for t in thumbnails):
            raise GalleryError("a thumbnail must be bytes (a JPEG) or None")
        rows = [_source_fields(s) for s in sources]
        digests = [row[0] for row in rows if row[0] is not None]
        if len(set(digests)) != len(digests):
            raise DuplicateFaceError("the same photo (sha256) is given twice")
        meta_update = check_metadata(metadata)
        created = _now()
        with self._lock:
            with self._transaction(write=True) as conn:
                before = self._generation(conn)
                subject_id = self._subject_for_write(
                    conn, subject, name, meta_update, create_subject
                )
                self._refuse_enrolled(conn, subject_id, digests)
                ids = [
                    self._insert_face(conn, subject_id, vector, row, thumbnail, created)
                    for vector, row, thumbnail in zip(vectors, rows, thumbnails)
                ]
                after = self._generation(conn)
            self._after_write(before, after, added=(np.array(ids, np.int64), vectors))
        return ids

    def add_subject(self, name: str, metadata: Mapping[str, Any] | None = None) -> Subject:
        """Create a subject without faces (SubjectExistsError if the name is taken; the name
        and metadata follow `gallery.rules`, else InvalidSubjectError)."""
        normal = subject_name(name)
        meta = check_metadata(metadata)
        with self._lock:
            with self._transaction(write=True) as conn:
                if self._find_subject(conn, name) is not None:
                    raise SubjectExistsError(f"subject {normal!r} already exists")
                self._subject_for_write(conn, name, normal, meta, create=True)
            return self.subject(normal)

    def update_metadata(self, name: str, metadata: Mapping[str, Any]) -> Subject:
        """Merge `metadata` into an existing subject's (SubjectNotFoundError if absent)."""
        meta = check_metadata(metadata)
        with self._lock:
            with self._transaction(write=True) as conn:
                self._subject_for_write(conn, name, name, meta, create=False)
            return self.subject(name)

    @staticmethod
    def _find_subject(conn: sqlite3.Connection, name: str) -> tuple[int, str, str] | None:
        """(id, stored name, metadata) of the subject `name` addresses (see `lookup_names`)."""
        for candidate in lookup_names(name):
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
        name: str,
        normal: str,
        metadata: dict[str, Any] | None,
        create: bool,
    ) -> int:
        """The id of the subject `name` addresses, created as `normal` (its checked form) when
        new and `create`; `metadata` merged into its own."""
        row = cls._find_subject(conn, name)
        if row is None:
            if not create:
                raise SubjectNotFoundError(f"no subject named {name!r}")
            cursor = conn.execute(
                "INSERT INTO subjects (name, metadata, created_at) VALUES (?, ?, ?)",
                (normal, json.dumps(metadata or {}), _now()),
            )
            return int(cursor.lastrowid)
        if metadata:
            merged = check_metadata({**json.loads(row[2]), **metadata})
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
                raise DuplicateFaceError(
                    f"the photo with sha256 {row[0][:12]}... is already enrolled for this subject"
                )

    def enrolled_photos(self, name: str) -> set[str]:
        """The sha256 digests of the photos enrolled for subject `name` (none if absent)."""
        with self._lock, self._transaction() as conn:
            row = self._find_subject(conn, name)
            if row is None:
                return set()
            query = "SELECT source_sha256 FROM faces WHERE subject_id = ?"
            return {r[0] for r in conn.execute(query, (row[0],)) if r[0] is not None}

    def _insert_face(
        self,
        conn: sqlite3.Connection,
        subject_id: int,
        vector: np.ndarray,
        source: tuple[Any, ...],
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
                self.model,
                self.model_version,
                *source,
                created,
                thumbnail,
            ),
        )
        return int(cursor.lastrowid)

    # -- removal -----------------------------------------------------------------------------

    def remove_subject(self, name: str) -> int:
        """Delete a subject and its faces (database first, then the index); returns the
        number of faces removed."""
        with self._lock:
            with self._transaction(write=True) as conn:
                before = self._generation(conn)
                found = self._find_subject(conn, name)
                if found is None:
                    raise SubjectNotFoundError(f"no subject named {name!r}")
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

    def remove_faces(self, face_ids: Sequence[int]) -> int:
        """Delete faces by id (subjects stay, even without faces); returns how many existed."""
        wanted = sorted({int(i) for i in face_ids})
        with self._lock:
            with self._transaction(write=True) as conn:
                before = self._generation(conn)
                gone: list[int] = []
                for start in range(0, len(wanted), _IN_CHUNK):
                    chunk = wanted[start : start + _IN_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    gone += [
                        r[0]
                        for r in conn.execute(f"SELECT id FROM faces WHERE id IN ({marks})", chunk)
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
            index = FaceIndex.load(self.index_dir, self.gallery_id, self.dim)
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

    def sync_index(self) -> dict[str, Any]:
        """Load, check and bring the index up to date now; returns a short description."""
        with self._lock:
            index = self._current_index()
            return {
                "kind": index.kind,
                "faces": index.live,
                "removed_marks": index.dead,
                "generation": index.generation,
            }

    def rebuild_index(self) -> None:
        """Rebuild the index from the database and save it."""
        with self._lock:
            self._rebuild_index()

    def save_index(self) -> None:
        """Write the loaded index next to the database (nothing to do if none is loaded)."""
        with self._lock:
            if self._index is None:
                return
            try:
                self._index.save(self.index_dir, self.gallery_id)
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

    # -- identification ----------------------------------------------------------------------

    def identify(
        self,
        embeddings: Any,
        top_k: int = 5,
        threshold: float | None = None,
        model: str | None = None,
        model_version: str | None = None,
    ) -> list[Identification]:
        """For each query embedding, the `top_k` subjects ranked by their best face's cosine
        similarity; `identity` is None (unknown) when the best is under `threshold`
        (default: `identification_threshold()`, from the model card)."""
        self.check_model(model, model_version)
        if int(top_k) < 1:
            raise GalleryError(f"top_k must be at least 1, got {top_k}")
        cut = self.identification_threshold().value if threshold is None else float(threshold)
        queries = self._prepare(embeddings)
        with self._lock:
            index = self._current_index()
            return [self._identify_one(index, q, int(top_k), cut) for q in queries]

    def _identify_one(
        self, index: FaceIndex, query: np.ndarray, top_k: int, threshold: float
    ) -> Identification:
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
        matches = [Match(names[sid], score, fid) for sid, (score, fid) in ranked]
        top = matches[0].score if matches else None
        identity = matches[0].subject if matches and top >= threshold else None
        return Identification(identity, top, threshold, matches)

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
        """All subjects with their face counts, by name."""
        query = (
            "SELECT s.id, s.name, s.metadata, s.created_at, COUNT(f.id), MIN(f.id) FROM subjects s"
            " LEFT JOIN faces f ON f.subject_id = s.id GROUP BY s.id ORDER BY s.name"
        )
        with self._lock:
            rows = self._db().execute(query).fetchall()
        return [Subject(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def subject(self, name: str) -> Subject:
        """One subject (SubjectNotFoundError if absent); `name` may be in any Unicode
        normal form."""
        with self._lock:
            conn = self._db()
            found = self._find_subject(conn, name)
            if found is None:
                raise SubjectNotFoundError(f"no subject named {name!r}")
            row = conn.execute(
                "SELECT s.id, s.name, s.metadata, s.created_at, COUNT(f.id), MIN(f.id)"
                " FROM subjects s LEFT JOIN faces f ON f.subject_id = s.id WHERE s.id = ?"
                " GROUP BY s.id",
                (found[0],),
            ).fetchone()
        return Subject(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def faces(self, subject: str | None = None, embeddings: bool = False) -> list[FaceRecord]:
        """Enrolled faces (of one subject, or all), by id; with their embeddings if asked."""
        query = (
            "SELECT f.id, s.name, f.model, f.model_version, f.source_sha256, f.x1, f.y1, f.x2,"
            " f.y2, f.score, f.created_at, f.embedding FROM faces f JOIN subjects s"
            " ON s.id = f.subject_id"
        )
        args: tuple[Any, ...] = ()
        with self._lock:
            if subject is not None:
                query += " WHERE s.id = ?"
                args = (self.subject(subject).id,)
            rows = self._db().execute(query + " ORDER BY f.id", args).fetchall()
        records = []
        for r in rows:
            box = None if r[5] is None else [r[5], r[6], r[7], r[8]]
            vector = np.frombuffer(r[11], dtype="<f4").astype(np.float32) if embeddings else None
            records.append(FaceRecord(r[0], r[1], r[2], r[3], r[4], box, r[9], r[10], vector))
        return records

    def face_thumbnail(self, face_id: int) -> bytes | None:
        """The JPEG thumbnail stored with face `face_id` (None: no such face, or none stored)."""
        if not self._thumbnails:
            return None
        with self._lock:
            query = "SELECT thumbnail FROM faces WHERE id = ?"
            row = self._db().execute(query, (int(face_id),)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def info(self) -> dict[str, Any]:
        """The gallery's model, dimension, counts and generation."""
        with self._lock, self._transaction() as conn:
            return self._info(conn)

    def snapshot(self) -> tuple[dict[str, Any], list[Subject], list[FaceRecord]]:
        """(info, subjects, faces with embeddings) read in one consistent transaction."""
        with self._lock, self._transaction() as conn:
            return self._info(conn), self.subjects(), self.faces(embeddings=True)

    def _info(self, conn: sqlite3.Connection) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "model": self.model,
            "model_version": self.model_version,
            "dim": self.dim,
            "schema_version": SCHEMA_VERSION,
            "created_at": self.created_at,
            "subjects": conn.execute("SELECT COUNT(*) FROM subjects").fetchone()[0],
            "faces": conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0],
            "generation": self._generation(conn),
        }

    def export(self, out: str | Path, fmt: str | None = None) -> dict[str, int]:
        """Write subjects, metadata and embeddings to `out` as JSON or npz (`fmt`, else from
        the suffix); returns the counts written."""
        from facesphere.gallery.export import export_gallery

        return export_gallery(self, Path(out), fmt)
