"""The PostgreSQL + pgvector back end: galleries shared by every process that reaches one
database, named by `postgresql://user@host/db?gallery=name` (or `postgres://`).

A database holds any number of galleries. `facesphere_galleries` lists them (name, model,
version, dimension, card, generation); each gallery has its own two tables,
`facesphere_subjects_<n>` and `facesphere_faces_<n>`, because pgvector's HNSW index needs a
column of one fixed dimension (`vector(D)`) and a search must walk only its gallery's graph: a
shared faces table filtered by gallery would lose recall once the filter drops the graph's
nearest neighbours. Identification runs in SQL (`ORDER BY embedding <=> q LIMIT n` on the HNSW
index, cosine distance, grouped to subjects). Each write is one transaction; enrollments of one
subject queue on its row lock, new subjects are made with `ON CONFLICT`, and the gallery's
generation is bumped last, so its row lock is held only until the commit.

psycopg 3 is the optional `postgres` extra; it is imported when a gallery is opened.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from facesphere.gallery.backend import (
    FaceSource,
    GalleryBackend,
    GalleryMeta,
    now,
    register_backend,
)
from facesphere.gallery.errors import (
    BackendUnavailableError,
    GalleryError,
    GalleryNotFoundError,
    SubjectExistsError,
    SubjectNotFoundError,
    duplicate_photo,
)
from facesphere.gallery.index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M
from facesphere.gallery.records import FaceRecord, Match, Subject
from facesphere.gallery.rules import merge_metadata

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION = 1
GALLERIES = "facesphere_galleries"
# pgvector's largest hnsw.ef_search; a search for more faces than this scans exactly.
MAX_EF_SEARCH = 1000
# Key of the advisory lock under which galleries are created (any constant of our own).
_CREATE_LOCK = 0x46534759
_MAX_NAME = 200
# Bounds of an index rebuild's maintenance_work_mem (see `rebuild_memory_mb`).
MIN_REBUILD_MB = 64
MAX_REBUILD_MB = 32 * 1024
_FACE_COLUMNS = (
    "f.id, s.name, f.model, f.model_version, f.source_sha256, f.x1, f.y1, f.x2, f.y2, f.score,"
    " f.created_at"
)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise GalleryError(
            "PostgreSQL galleries need psycopg: pip install 'facesphere[postgres]'"
        ) from exc
    return psycopg


def split_url(url: str) -> tuple[str, str, str]:
    """(connection URL without `gallery`, gallery name, URL for messages: no password)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [value for key, value in query if key == "gallery"]
    if len(names) != 1 or not names[0].strip():
        raise GalleryError(f"a PostgreSQL gallery URL needs one ?gallery=name: {_public(url)}")
    name = names[0]
    if len(name) > _MAX_NAME or not name.isprintable():
        raise GalleryError(f"gallery names have at most {_MAX_NAME} printable characters")
    rest = urlencode([(k, v) for k, v in query if k != "gallery"])
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
    return conninfo, name, _public(url)


def _public(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    host = f"{user}@{netloc[2]}" if netloc[1] else netloc[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def _plain_names(number: int) -> dict[str, str]:
    """The tables and HNSW index of gallery number `number`."""
    return {
        "subjects": f"facesphere_subjects_{number}",
        "faces": f"facesphere_faces_{number}",
        "hnsw": f"facesphere_faces_{number}_hnsw",
    }


def _vector_text(vector: np.ndarray) -> str:
    """pgvector's text form; each float32 printed so that it reads back bit for bit."""
    return "[" + ",".join(repr(v) for v in vector.astype(np.float64).tolist()) + "]"


def _vector_of(binary: bytes) -> np.ndarray:
    """A vector from pgvector's binary form: dimension, unused, then big-endian float32s."""
    return np.frombuffer(binary, ">f4", offset=4).astype(np.float32)


@contextlib.contextmanager
def _database_errors(location: str) -> Iterator[None]:
    """psycopg's failures as gallery errors: a dropped table means the gallery was deleted,
    anything else (server down, lock timeout) is the database being unavailable."""
    psycopg = _psycopg()
    try:
        yield
    except psycopg.errors.UndefinedTable:
        raise GalleryNotFoundError(f"gallery {location} was deleted") from None
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendUnavailableError(f"gallery {location}: database error: {message}") from exc


def rebuild_memory_mb(faces: int, dim: int, m: int = HNSW_M) -> int:
    """maintenance_work_mem (MB) that holds pgvector's HNSW graph of `faces` vectors in
    memory, with a quarter to spare: per element the vector (4 bytes a dimension), about
    16 bytes for each of its 2m layer-0 neighbours (and the few above), and a fixed 256.
    Past that pgvector goes on inserting into the index on disk, many times slower (at 1M x
    512-d, m = 32: about 4 GB). Clamped to [64 MB, 32 GB]."""
    element = 4 * dim + 16 * (2 * m + m // 2) + 256
    return max(MIN_REBUILD_MB, min(MAX_REBUILD_MB, -(-faces * element * 5 // 4 // 2**20)))


@register_backend("postgres")
class PostgresBackend(GalleryBackend):
    """The gallery named by `target`'s `gallery` parameter in the database it names."""

    schemes = ("postgresql", "postgres")

    def __init__(self, target: str) -> None:
        self._conninfo, self.name, self.location = split_url(str(target))
        self._conn: psycopg.Connection | None = None
        with self._transaction() as cur:
            row = self._gallery_row(cur)
        if row is None:
            raise GalleryNotFoundError(
                f"gallery not found: {self.location} (create it with `facesphere gallery create`)"
            )
        self._number, schema_version, *fields = row
        if schema_version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.location} has schema version {schema_version}; this facesphere reads up "
                f"to {SCHEMA_VERSION}"
            )
        self.meta = GalleryMeta(*fields)
        self._tables = self._table_names(self._number)

    # -- connection and transactions ---------------------------------------------------------

    @staticmethod
    def _connect(conninfo: str) -> psycopg.Connection:
        psycopg = _psycopg()
        return psycopg.connect(conninfo, autocommit=True)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor]:
        """A cursor in autocommit mode (each statement its own transaction) on the
        connection, opened again if it was lost; searches run at `HNSW_EF_SEARCH`."""
        with _database_errors(self.location):
            if self._conn is None or self._conn.broken:
                self._conn = self._connect(self._conninfo)
                ef = str(HNSW_EF_SEARCH)
                self._conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (ef,))
            with self._conn.cursor(binary=True) as cur:
                yield cur

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor]:
        """A cursor in one transaction (committed on success, rolled back on any exception)."""
        with self._cursor() as cur, cur.connection.transaction():
            yield cur

    def _gallery_row(self, cur: psycopg.Cursor) -> tuple | None:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (GALLERIES,))
        if not cur.fetchone()[0]:
            return None
        cur.execute(
            f"SELECT id, schema_version, gallery_id, model, model_version, dim, created_at, card"
            f" FROM {GALLERIES} WHERE name = %s",
            (self.name,),
        )
        return cur.fetchone()

    @staticmethod
    def _table_names(number: int) -> dict[str, Any]:
        from psycopg import sql

        names = _plain_names(number)
        return {
            "s": sql.Identifier(names["subjects"]),
            "f": sql.Identifier(names["faces"]),
            "hnsw": sql.Identifier(names["hnsw"]),
        }

    def _sql(self, text: str) -> Any:
        from psycopg import sql

        return sql.SQL(text).format(**self._tables)

    # -- lifetime ----------------------------------------------------------------------------

    @classmethod
    def exists(cls, target: str) -> bool:
        conninfo, name, location = split_url(str(target))
        with _database_errors(location), cls._connect(conninfo) as conn:
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (GALLERIES,)).fetchone()[0]:
                return False
            query = f"SELECT 1 FROM {GALLERIES} WHERE name = %s"
            return conn.execute(query, (name,)).fetchone() is not None

    @classmethod
    def create(cls, target: str, meta: GalleryMeta) -> bool:
        """Make the gallery's row and tables (and the vector extension and galleries table
        on first use) under one advisory lock; whether it was there already."""
        from psycopg import sql

        conninfo, name, location = split_url(str(target))
        with _database_errors(location), cls._connect(conninfo) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {GALLERIES} ("
                " id bigserial PRIMARY KEY, name text NOT NULL UNIQUE,"
                " gallery_id text NOT NULL UNIQUE, schema_version integer NOT NULL,"
                " model text NOT NULL, model_version text NOT NULL, dim integer NOT NULL,"
                " created_at text NOT NULL, card text, generation bigint NOT NULL DEFAULT 0)"
            )
            if conn.execute(f"SELECT 1 FROM {GALLERIES} WHERE name = %s", (name,)).fetchone():
                return True
            number = conn.execute(
                f"INSERT INTO {GALLERIES} (name, gallery_id, schema_version, model,"
                " model_version, dim, created_at, card) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id",
                (
                    name,
                    meta.gallery_id,
                    SCHEMA_VERSION,
                    meta.model,
                    meta.model_version,
                    meta.dim,
                    meta.created_at,
                    meta.card_json,
                ),
            ).fetchone()[0]
            tables = cls._table_names(number)
            statements = [
                "CREATE TABLE {s} (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE,"
                " metadata text NOT NULL DEFAULT '{{}}', created_at text NOT NULL)",
                "CREATE TABLE {f} (id bigserial PRIMARY KEY,"
                " subject_id bigint NOT NULL REFERENCES {s}(id) ON DELETE CASCADE,"
                " embedding vector({dim}) NOT NULL, model text NOT NULL,"
                " model_version text NOT NULL, source_sha256 text, x1 double precision,"
                " y1 double precision, x2 double precision, y2 double precision,"
                " score double precision, created_at text NOT NULL, thumbnail bytea)",
                "CREATE INDEX ON {f} (subject_id)",
            ]
            for statement in statements:
                conn.execute(sql.SQL(statement).format(**tables, dim=sql.Literal(meta.dim)))
            conn.execute(cls._create_hnsw(tables))
        return False

    @staticmethod
    def _create_hnsw(tables: dict[str, Any]) -> Any:
        """The statement making a gallery's HNSW index (cosine distance)."""
        from psycopg import sql

        return sql.SQL(
            "CREATE INDEX {hnsw} ON {f} USING hnsw (embedding vector_cosine_ops)"
            " WITH (m = {m}, ef_construction = {ef})"
        ).format(**tables, m=sql.Literal(HNSW_M), ef=sql.Literal(HNSW_EF_CONSTRUCTION))

    @property
    def table_names(self) -> dict[str, str]:
        """The gallery's tables and HNSW index: {"subjects", "faces", "hnsw"} (for bulk tools
        such as bench/gallery_backends.py)."""
        return _plain_names(self._number)

    @classmethod
    def gallery_target(cls, database: str, name: str) -> str:
        if "gallery" in dict(parse_qsl(urlsplit(database).query)):
            raise GalleryError(f"a database URL names no gallery: {_public(database)}")
        target = (
            f"{database}{'&' if urlsplit(database).query else '?'}{urlencode({'gallery': name})}"
        )
        split_url(target)  # a name the URL cannot carry is refused here
        return target

    @classmethod
    def gallery_names(cls, database: str) -> list[str]:
        location = _public(database)
        with _database_errors(location), cls._connect(database) as conn:
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (GALLERIES,)).fetchone()[0]:
                return []
            rows = conn.execute(f'SELECT name FROM {GALLERIES} ORDER BY name COLLATE "C"')
            return [row[0] for row in rows.fetchall()]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def present(self) -> bool:
        with self._transaction() as cur:
            row = self._gallery_row(cur)
        return row is not None and row[0] == self._number and row[2] == self.meta.gallery_id

    def delete(self) -> None:
        """Drop the gallery's tables and row in one transaction (waiting for other processes'
        transactions on them to end)."""
        with self._transaction() as cur:
            cur.execute(self._sql("DROP TABLE IF EXISTS {f}, {s}"))
            cur.execute(f"DELETE FROM {GALLERIES} WHERE id = %s", (self._number,))
        self.close()

    # -- counts ------------------------------------------------------------------------------

    def face_count(self) -> int:
        with self._transaction() as cur:
            return self._face_count(cur)

    def subject_count(self) -> int:
        with self._transaction() as cur:
            query = self._sql("SELECT COUNT(DISTINCT subject_id) FROM {f}")
            return int(cur.execute(query).fetchone()[0])

    def generation(self) -> int:
        with self._transaction() as cur:
            return self._generation(cur)

    def _face_count(self, cur: psycopg.Cursor) -> int:
        return int(cur.execute(self._sql("SELECT COUNT(*) FROM {f}")).fetchone()[0])

    def _generation(self, cur: psycopg.Cursor) -> int:
        query = f"SELECT generation FROM {GALLERIES} WHERE id = %s"
        row = cur.execute(query, (self._number,)).fetchone()
        if row is None:
            raise GalleryNotFoundError(f"gallery {self.location} was deleted")
        return int(row[0])

    def _bump(self, cur: psycopg.Cursor, changed: int) -> None:
        """Add `changed` faces to the generation: the last statement of a write, so that the
        gallery's row is locked only until the commit."""
        if changed:
            cur.execute(
                f"UPDATE {GALLERIES} SET generation = generation + %s WHERE id = %s",
                (changed, self._number),
            )

    def state(self) -> dict[str, int]:
        with self._transaction() as cur:
            return self._state(cur)

    def _state(self, cur: psycopg.Cursor) -> dict[str, int]:
        cur.execute(self._sql("SELECT (SELECT COUNT(*) FROM {s}), (SELECT COUNT(*) FROM {f})"))
        subjects, faces = cur.fetchone()
        return {
            "schema_version": SCHEMA_VERSION,
            "subjects": int(subjects),
            "faces": int(faces),
            "generation": self._generation(cur),
        }

    # -- reading -----------------------------------------------------------------------------

    def _subjects(self, cur: psycopg.Cursor, where: str = "", args: tuple = ()) -> list[Subject]:
        cur.execute(
            self._sql(
                "SELECT s.id, s.name, s.metadata, s.created_at, COUNT(f.id), MIN(f.id)"
                f" FROM {{s}} s LEFT JOIN {{f}} f ON f.subject_id = s.id {where} GROUP BY s.id"
                ' ORDER BY s.name COLLATE "C"'
            ),
            args,
        )
        rows = cur.fetchall()
        return [Subject(r[0], r[1], json.loads(r[2]), r[3], int(r[4]), r[5]) for r in rows]

    def subjects(self) -> list[Subject]:
        with self._transaction() as cur:
            return self._subjects(cur)

    def subject(self, names: list[str]) -> Subject | None:
        with self._transaction() as cur:
            found = self._find_subject(cur, names)
            if found is None:
                return None
            return self._subjects(cur, "WHERE s.id = %s", (found[0],))[0]

    def _find_subject(
        self, cur: psycopg.Cursor, names: list[str], lock: bool = False
    ) -> tuple[int, str, str] | None:
        """(id, stored name, metadata) of the first of `names` stored; row-locked if `lock`."""
        query = "SELECT id, name, metadata FROM {s} WHERE name = ANY(%s)"
        rows = cur.execute(self._sql(query + (" FOR UPDATE" if lock else "")), (names,))
        found = {row[1]: row for row in rows.fetchall()}
        return next((found[n] for n in names if n in found), None)

    def faces(self, subject_id: int | None, embeddings: bool) -> list[FaceRecord]:
        with self._transaction() as cur:
            return self._faces(cur, subject_id, embeddings)

    def _faces(
        self, cur: psycopg.Cursor, subject_id: int | None, embeddings: bool
    ) -> list[FaceRecord]:
        where = "" if subject_id is None else " WHERE s.id = %s"
        vector = ", f.embedding" if embeddings else ""
        cur.execute(
            self._sql(
                f"SELECT {_FACE_COLUMNS}{vector} FROM {{f}} f JOIN {{s}} s"
                f" ON s.id = f.subject_id{where} ORDER BY f.id"
            ),
            () if subject_id is None else (subject_id,),
        )
        records = []
        for r in cur.fetchall():
            box = None if r[5] is None else [r[5], r[6], r[7], r[8]]
            embedding = _vector_of(r[11]) if embeddings else None
            records.append(FaceRecord(r[0], r[1], r[2], r[3], r[4], box, r[9], r[10], embedding))
        return records

    def snapshot(self) -> tuple[dict[str, int], list[Subject], list[FaceRecord]]:
        with self._transaction() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return self._state(cur), self._subjects(cur), self._faces(cur, None, True)

    def enrolled_photos(self, names: list[str]) -> set[str]:
        with self._transaction() as cur:
            found = self._find_subject(cur, names)
            if found is None:
                return set()
            query = self._sql("SELECT source_sha256 FROM {f} WHERE subject_id = %s")
            return {r[0] for r in cur.execute(query, (found[0],)) if r[0] is not None}

    def face_thumbnail(self, face_id: int) -> bytes | None:
        with self._transaction() as cur:
            query = self._sql("SELECT thumbnail FROM {f} WHERE id = %s")
            row = cur.execute(query, (face_id,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

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
        with self._transaction() as cur:
            subject_id = self._subject_for_write(cur, names, normal, metadata, create_subject)
            if digests:
                query = "SELECT source_sha256 FROM {f} WHERE subject_id = %s"
                query += " AND source_sha256 = ANY(%s) LIMIT 1"
                row = cur.execute(self._sql(query), (subject_id, digests)).fetchone()
                if row is not None:
                    raise duplicate_photo(row[0])
            ids = [
                self._insert_face(cur, subject_id, vector, source, thumbnail, created)
                for vector, source, thumbnail in zip(vectors, sources, thumbnails)
            ]
            self._bump(cur, len(ids))
        return ids

    def _insert_face(
        self,
        cur: psycopg.Cursor,
        subject_id: int,
        vector: np.ndarray,
        source: FaceSource,
        thumbnail: bytes | None,
        created: str,
    ) -> int:
        query = (
            "INSERT INTO {f} (subject_id, embedding, model, model_version, source_sha256,"
            " x1, y1, x2, y2, score, created_at, thumbnail)"
            " VALUES (%s, %s::vector, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
        )
        args = (
            subject_id,
            _vector_text(vector),
            self.meta.model,
            self.meta.model_version,
            *source,
            created,
            thumbnail,
        )
        return int(cur.execute(self._sql(query), args).fetchone()[0])

    def _subject_for_write(
        self,
        cur: psycopg.Cursor,
        names: list[str],
        normal: str,
        metadata: dict[str, Any] | None,
        create: bool,
    ) -> int:
        """The id of the subject `names` addresses, row-locked (created as `normal` when new
        and `create`); `metadata` merged into its own."""
        row = self._find_subject(cur, names, lock=True)
        if row is None:
            if not create:
                raise SubjectNotFoundError(f"no subject named {names[0]!r}")
            query = (
                "INSERT INTO {s} (name, metadata, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING id"
            )
            made = cur.execute(self._sql(query), (normal, json.dumps(metadata or {}), now()))
            new = made.fetchone()
            if new is not None:
                return int(new[0])
            row = self._find_subject(cur, [normal], lock=True)  # another process made it
            assert row is not None
        if metadata:
            merged = merge_metadata(json.loads(row[2]), metadata)
            query = "UPDATE {s} SET metadata = %s WHERE id = %s"
            cur.execute(self._sql(query), (json.dumps(merged), row[0]))
        return int(row[0])

    def add_subject(self, names: list[str], normal: str, metadata: dict[str, Any] | None) -> None:
        with self._transaction() as cur:
            if self._find_subject(cur, names) is None:
                query = (
                    "INSERT INTO {s} (name, metadata, created_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name) DO NOTHING RETURNING id"
                )
                made = cur.execute(self._sql(query), (normal, json.dumps(metadata or {}), now()))
                if made.fetchone() is not None:
                    return
        raise SubjectExistsError(f"subject {normal!r} already exists")

    def update_metadata(self, names: list[str], metadata: dict[str, Any] | None) -> None:
        with self._transaction() as cur:
            self._subject_for_write(cur, names, names[0], metadata, create=False)

    def remove_subject(self, names: list[str]) -> int:
        with self._transaction() as cur:
            found = self._find_subject(cur, names, lock=True)
            if found is None:
                raise SubjectNotFoundError(f"no subject named {names[0]!r}")
            gone = cur.execute(self._sql("DELETE FROM {f} WHERE subject_id = %s"), (found[0],))
            removed = gone.rowcount
            cur.execute(self._sql("DELETE FROM {s} WHERE id = %s"), (found[0],))
            self._bump(cur, removed)
        return removed

    def remove_faces(self, face_ids: list[int]) -> int:
        with self._transaction() as cur:
            gone = cur.execute(self._sql("DELETE FROM {f} WHERE id = ANY(%s)"), (face_ids,))
            removed = gone.rowcount
            self._bump(cur, removed)
        return removed

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        with self._cursor() as cur:
            return [self._search_one(cur, query, top_k) for query in queries]

    def _search_one(self, cur: psycopg.Cursor, query: np.ndarray, top_k: int) -> list[Match]:
        # The top k subjects are the first k distinct subjects among the nearest faces: widen
        # the search until k turn up or fewer faces than asked for came back.
        wanted = max(4 * top_k, 16)
        text = _vector_text(query)
        while True:
            rows = self._nearest(cur, text, wanted, top_k)
            seen = int(rows[0][3]) if rows else 0
            if len(rows) >= top_k or seen < wanted:
                return [Match(name, float(score), int(fid)) for name, score, fid, _ in rows]
            wanted *= 4

    def _nearest(self, cur: psycopg.Cursor, text: str, wanted: int, top_k: int) -> list[tuple]:
        """The best face of each subject among the `wanted` nearest faces, best first, at most
        `top_k`: (name, cosine, face id, faces seen). The HNSW scan returns at most
        hnsw.ef_search rows: a wider search raises it, and past MAX_EF_SEARCH scans exactly."""
        search = self._sql(
            "WITH near AS (SELECT id, subject_id, embedding <=> %(q)s::vector AS d FROM {f}"
            " ORDER BY d LIMIT %(n)s),"
            " best AS (SELECT DISTINCT ON (subject_id) subject_id, id, d FROM near"
            " ORDER BY subject_id, d, id)"
            " SELECT s.name, 1 - b.d, b.id, (SELECT COUNT(*) FROM near) FROM best b"
            " JOIN {s} s ON s.id = b.subject_id ORDER BY b.d, b.id LIMIT %(k)s"
        )
        args = {"q": text, "n": wanted, "k": top_k}
        if wanted <= HNSW_EF_SEARCH:  # the session's setting: one statement, one round trip
            return cur.execute(search, args).fetchall()
        with cur.connection.transaction():
            if wanted > MAX_EF_SEARCH:
                cur.execute("SELECT set_config('enable_indexscan', 'off', true)")
            else:
                cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(wanted),))
            return cur.execute(search, args).fetchall()

    def index_status(self) -> dict[str, Any]:
        with self._transaction() as cur:
            faces = self._face_count(cur)
            return {"kind": "hnsw", "faces": faces, "generation": self._generation(cur)}

    def rebuild_index(self) -> None:
        """Build the HNSW index anew (made again if it was dropped, e.g. for a bulk load),
        with memory for the whole graph: pgvector builds far faster when it fits."""
        with self._transaction() as cur:
            faces = self._face_count(cur)
            memory = rebuild_memory_mb(faces, self.meta.dim)
            cur.execute(f"SET LOCAL maintenance_work_mem = '{memory}MB'")
            cur.execute(self._sql("DROP INDEX IF EXISTS {hnsw}"))
            cur.execute(self._create_hnsw(self._tables))
