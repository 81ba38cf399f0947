"""The vector index of a gallery: FAISS inner-product search over unit vectors.

Small galleries use exact search (`IndexFlatIP`); from `HNSW_MIN_FACES` live faces on, an HNSW
graph (`IndexHNSWFlat`, inner-product metric). Index positions map to face ids through a stored
id array; removed faces are marked -1 there and filtered out of searches by a bitmap selector
until the index is compacted. The index is saved as three files in an owner-only folder
(vectors, ids, state); the state records the database generation the index matches and the
SHA-256 of the other two files, checked on every load, so that a half-written, foreign or
edited index is rebuilt from the database instead of trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from facesphere.io.files import file_sha256
from facesphere.paths import make_private_dirs, open_private

FLAT = "flat"
HNSW = "hnsw"

# Live face count from which the gallery switches from exact search to HNSW. Measured with
# bench/gallery.py (single-query p50, one thread, 2 shared CPU cores, 2026-11-27): at 128-d
# exact search takes 0.74 ms at 50k faces and 2.6-2.9 ms at 100k, where HNSW at the efSearch
# below takes 1.45 ms; at 512-d exact search takes 0.57 ms at 10k, 1.9 ms at 20k and 15 ms at
# 100k, against 1.1 ms (10k) and 3.7 ms (100k) for HNSW. HNSW pays off from a few tens of
# thousands of faces; under that, exact answers are nearly free.
HNSW_MIN_FACES = 50_000
# Graph degree, build beam and search beam of the HNSW index. efSearch is the smallest value of
# the bench's sweep (32..1024) that kept recall@1 >= 0.99 against exact search at 1M 128-d
# faces (0.997, p50 3.1 ms) for queries at cosine 0.9 from their match, i.e. the queries that
# can pass the verification threshold; at 100k it gives 1.000 at both 128-d and 512-d.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
# Searches of up to this many queries run on one thread: for one query faiss's thread team
# costs more than it saves, most of all on a busy machine (bench/gallery.py measured exact
# search of 10k 128-d faces at 0.07 ms p50 on one thread, 24 ms with two on two busy cores).
SINGLE_THREAD_QUERIES = 4
# Removed-face marks tolerated before the index is rebuilt without them.
MAX_DEAD_FRACTION = 0.25

INDEX_FORMAT = 2  # 2: SHA-256 digests of both files (1 had the vectors file's size only)
_VECTORS = "vectors.faiss"
_IDS = "ids.npy"
_STATE = "state.json"
_LOCK = ".lock"


def kind_for(live: int, current: str | None = None) -> str:
    """The index kind for `live` faces; switching back to flat only under half the threshold
    keeps a gallery near the threshold from flipping at each enrollment."""
    if current == HNSW:
        return HNSW if live >= HNSW_MIN_FACES // 2 else FLAT
    return HNSW if live >= HNSW_MIN_FACES else FLAT


def _new_faiss_index(kind: str, dim: int, m: int, ef_construction: int) -> faiss.Index:
    if kind == FLAT:
        return faiss.IndexFlatIP(dim)
    if kind == HNSW:
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        return index
    raise ValueError(f"unknown index kind {kind!r}")


class FaceIndex:
    """Inner-product search over face embeddings, returning face ids.

    generation: the database generation the content matches (-1: unknown).
    """

    def __init__(
        self,
        dim: int,
        kind: str = FLAT,
        generation: int = -1,
        m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int = HNSW_EF_SEARCH,
    ) -> None:
        self.dim = int(dim)
        self.kind = kind
        self.generation = generation
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.index = _new_faiss_index(kind, self.dim, m, ef_construction)
        self.ids = np.zeros(0, np.int64)
        self._dead = 0
        self._selector: tuple[np.ndarray, faiss.IDSelector] | None = None

    @classmethod
    def build(
        cls,
        dim: int,
        ids: np.ndarray,
        vectors: np.ndarray,
        generation: int = -1,
        kind: str | None = None,
        **params: int,
    ) -> FaceIndex:
        """An index holding `vectors` under face `ids` (kind chosen from the count if None)."""
        index = cls(dim, kind or kind_for(len(ids)), generation, **params)
        index.add(ids, vectors)
        return index

    # -- content -----------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Stored vectors, removed ones included."""
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        """Stored vectors of faces not removed."""
        return self.ntotal - self._dead

    @property
    def dead(self) -> int:
        """Removed faces still stored (marked -1)."""
        return self._dead

    def live_ids(self) -> np.ndarray:
        """Sorted ids of the faces in the index."""
        return np.sort(self.ids[self.ids >= 0])

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the faces in the index, in index order."""
        keep = np.flatnonzero(self.ids >= 0)
        if self.ntotal == 0:
            return self.ids[keep], np.zeros((0, self.dim), np.float32)
        vectors = self.index.reconstruct_n(0, self.ntotal)
        return self.ids[keep], vectors[keep]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append faces (ids must not be in the index already)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids) == 0:
            return
        self.index.add(vectors)
        self.ids = np.concatenate([self.ids, ids])
        self._selector = None

    def remove(self, ids: np.ndarray) -> int:
        """Mark faces removed; returns how many were found."""
        hit = np.isin(self.ids, np.asarray(ids, dtype=np.int64)) & (self.ids >= 0)
        found = int(hit.sum())
        self.ids[hit] = -1
        self._dead += found
        self._selector = None
        return found

    def needs_rebuild(self) -> bool:
        """Too many removed faces stored, or the live count calls for the other kind."""
        if self._dead > MAX_DEAD_FRACTION * max(self.ntotal, 1):
            return True
        return kind_for(self.live, self.kind) != self.kind

    def compacted(self) -> FaceIndex:
        """A new index of the live faces only, of the kind their count calls for."""
        ids, vectors = self.live_vectors()
        return FaceIndex.build(
            self.dim,
            ids,
            vectors,
            self.generation,
            kind_for(len(ids), self.kind),
            m=self.m,
            ef_construction=self.ef_construction,
            ef_search=self.ef_search,
        )

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` most similar live faces of each query: (scores, face ids), both (nq, k),
        best first; missing entries have id -1 and score -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), self.live))
        if self.live == 0:
            shape = (len(queries), 1)
            return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64)
        params = self._search_params(k)
        with _threads(1 if len(queries) <= SINGLE_THREAD_QUERIES else None):
            if params is None:
                scores, positions = self.index.search(queries, k)
            else:
                scores, positions = self.index.search(queries, k, params=params)
        found = positions >= 0
        face_ids = np.where(found, self.ids[np.where(found, positions, 0)], -1)
        scores = np.where(face_ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, face_ids

    def _search_params(self, k: int) -> faiss.SearchParameters | None:
        selector = None
        if self._dead:
            if self._selector is None:
                # faiss reads bit i of the bitmap as byte i >> 3, bit i & 7; the array must
                # outlive the selector, so both are kept together
                bitmap = np.packbits(self.ids >= 0, bitorder="little")
                self._selector = (
                    bitmap,
                    faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(bitmap)),
                )
            selector = self._selector[1]
        if self.kind == HNSW:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
        elif selector is not None:
            params = faiss.SearchParameters()
        else:
            return None
        if selector is not None:
            params.sel = selector
        return params

    # -- files -------------------------------------------------------------------------------

    def save(self, folder: Path, gallery_id: str) -> None:
        """Write the index atomically enough: each file replaced whole, the state last; the
        state's digests reveal a mix of old and new files or an edited one."""
        make_private_dirs(folder)
        with _locked(folder, exclusive=True):
            for stale in folder.glob("*.tmp-*"):
                stale.unlink(missing_ok=True)  # left by a writer that died mid-save
            on_disk = _read_state(folder)
            if (
                on_disk is not None
                and on_disk.get("gallery_id") == gallery_id
                and on_disk.get("generation", -1) > self.generation
            ):
                return  # another process saved a newer index
            suffix = f".tmp-{os.getpid()}"
            vectors_tmp = folder / (_VECTORS + suffix)
            ids_tmp = folder / (_IDS + suffix)
            state_tmp = folder / (_STATE + suffix)
            open_private(vectors_tmp).close()  # owner-only before faiss writes into it
            faiss.write_index(self.index, str(vectors_tmp))
            with open_private(ids_tmp) as handle:
                np.save(handle, self.ids)
            state = {
                "format": INDEX_FORMAT,
                "gallery_id": gallery_id,
                "generation": self.generation,
                "kind": self.kind,
                "dim": self.dim,
                "ntotal": self.ntotal,
                "dead": self._dead,
                "vectors_sha256": file_sha256(vectors_tmp),
                "ids_sha256": file_sha256(ids_tmp),
                "m": self.m,
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
            }
            with open_private(state_tmp) as handle:
                handle.write(json.dumps(state).encode())
            for tmp in (vectors_tmp, ids_tmp, state_tmp):
                _fsync(tmp)
            os.replace(vectors_tmp, folder / _VECTORS)
            os.replace(ids_tmp, folder / _IDS)
            os.replace(state_tmp, folder / _STATE)

    @classmethod
    def load(cls, folder: Path, gallery_id: str, dim: int) -> FaceIndex | None:
        """The saved index, or None when missing, unreadable, partial, of another gallery, or
        when a file's content is not the one its state's digest records."""
        if not (folder / _STATE).is_file():
            return None
        with _locked(folder, exclusive=False):
            state = _read_state(folder)
            if (
                state is None
                or state.get("format") != INDEX_FORMAT
                or state.get("gallery_id") != gallery_id
                or state.get("dim") != dim
                or state.get("kind") not in (FLAT, HNSW)
            ):
                return None
            try:
                # Checked before parsing: an edited file is never read as an index.
                for name, key in ((_IDS, "ids_sha256"), (_VECTORS, "vectors_sha256")):
                    if file_sha256(folder / name) != state.get(key):
                        return None
                ids = np.load(folder / _IDS, allow_pickle=False)
                raw = faiss.read_index(str(folder / _VECTORS))
            except (OSError, ValueError, RuntimeError):
                return None
        if ids.dtype != np.int64 or ids.ndim != 1 or raw.ntotal != len(ids) or raw.d != dim:
            return None
        index = cls(
            dim,
            state["kind"],
            int(state["generation"]),
            m=int(state.get("m", HNSW_M)),
            ef_construction=int(state.get("ef_construction", HNSW_EF_CONSTRUCTION)),
            ef_search=int(state.get("ef_search", HNSW_EF_SEARCH)),
        )
        index.index = raw
        index.ids = ids
        index._dead = int((ids < 0).sum())
        return index


def _read_state(folder: Path) -> dict | None:
    try:
        state = json.loads((folder / _STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run faiss with `count` OpenMP threads (None: unchanged). OpenMP keeps the setting per
    calling thread, so this does not affect searches of other Python threads."""
    if count is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


@contextlib.contextmanager
def _locked(folder: Path, exclusive: bool) -> Iterator[None]:
    """An advisory lock between processes saving and loading the same index folder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: rely on the checksums alone
        yield
        return
    try:
        handle = os.fdopen(os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
    except OSError:
        if exclusive:
            raise
        yield  # a read-only folder: nobody can be writing there through us
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
