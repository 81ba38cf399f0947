"""`GalleryBackend`: where a gallery's subjects, faces and metadata are stored and how they are
searched; the registry of back ends (`register_backend`, `backend_for`, `list_backends`).

A back end is one module in `facesphere.gallery.backends` with one decorated class. It gets
input that `Gallery` already checked (names by `gallery.rules`, unit float32 vectors of the
gallery's dimension, face sources as `FaceSource` tuples) and keeps the storage promises: each
write one transaction (all or nothing), safe for several processes at once, a generation
counter bumped by every face insert or delete, and `search` ranking subjects by their best
face's cosine similarity.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.gallery.errors import GalleryError
from facesphere.gallery.records import FaceRecord, Match, Subject
from facesphere.registry import Registry

# (sha256, x1, y1, x2, y2, score) of one face's source photo; each may be None.
FaceSource = tuple[Any, ...]

# A target that starts like `scheme://` is a URL naming its back end; anything else a file.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def now() -> str:
    """The current UTC time as stored with subjects and faces."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class GalleryMeta:
    """What a gallery was made for, fixed at creation: its id, the model, version and
    dimension of its embeddings, when, and the model card as JSON (None without one)."""

    gallery_id: str
    model: str
    model_version: str
    dim: int
    created_at: str
    card_json: str | None = None


class GalleryBackend(ABC):
    """Storage and search of one gallery; `Gallery` holds one and serialises calls to it.

    `location` names the gallery in messages (a path, or a URL without its password);
    `meta` is what it was made for.
    """

    # URL schemes that name this back end (none: it takes plain file paths).
    schemes: tuple[str, ...] = ()

    location: str
    meta: GalleryMeta

    # -- lifetime ----------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def create(cls, target: str | Path, meta: GalleryMeta) -> bool:
        """Make the gallery at `target` for `meta` unless one is there; whether one was."""

    @classmethod
    @abstractmethod
    def exists(cls, target: str | Path) -> bool:
        """Whether something that may be a gallery is at `target` (opening it tells)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (and save what is cached); safe to call twice."""

    @abstractmethod
    def present(self) -> bool:
        """Whether the gallery opened is still there (not deleted or replaced)."""

    @abstractmethod
    def delete(self) -> None:
        """Close and remove the whole gallery."""

    def files(self) -> list[Path]:
        """The local files that hold the gallery (none for a database server)."""
        return []

    # -- a database of galleries (URL back ends) ---------------------------------------------

    @classmethod
    def gallery_target(cls, database: str, name: str) -> str:
        """The target of gallery `name` in the database at URL `database`."""
        raise GalleryError(f"{cls.__name__} has no database of galleries: {database}")

    @classmethod
    def gallery_names(cls, database: str) -> list[str]:
        """The names of the galleries in the database at URL `database`, sorted."""
        raise GalleryError(f"{cls.__name__} has no database of galleries: {database}")

    # -- counts ------------------------------------------------------------------------------

    @abstractmethod
    def face_count(self) -> int:
        """The number of faces."""

    @abstractmethod
    def subject_count(self) -> int:
        """The number of subjects with at least one face."""

    @abstractmethod
    def generation(self) -> int:
        """The change counter (bumped by every face insert or delete)."""

    @abstractmethod
    def state(self) -> dict[str, int]:
        """{"schema_version", "subjects", "faces", "generation"} read together."""

    # -- reading -----------------------------------------------------------------------------

    @abstractmethod
    def subjects(self) -> list[Subject]:
        """All subjects with their face counts, by name."""

    @abstractmethod
    def subject(self, names: list[str]) -> Subject | None:
        """The subject stored under the first of `names` that exists (`rules.lookup_names`)."""

    @abstractmethod
    def faces(self, subject_id: int | None, embeddings: bool) -> list[FaceRecord]:
        """Faces (of one subject id, or all) by id, with their embeddings if asked."""

    @abstractmethod
    def snapshot(self) -> tuple[dict[str, int], list[Subject], list[FaceRecord]]:
        """(`state()`, subjects, faces with embeddings) read in one consistent transaction."""

    @abstractmethod
    def enrolled_photos(self, names: list[str]) -> set[str]:
        """The sha256 digests of the photos enrolled for the subject (none if absent)."""

    @abstractmethod
    def face_thumbnail(self, face_id: int) -> bytes | None:
        """The JPEG thumbnail stored with a face (None: no such face, or none stored)."""

    # -- writing -----------------------------------------------------------------------------

    @abstractmethod
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
        """In one transaction: find the subject `names` addresses (or create it as `normal`
        when `create_subject`, else SubjectNotFoundError), merge `metadata` into its own
        (`rules.merge_metadata`), refuse photos enrolled for it already (DuplicateFaceError)
        and insert the faces; their ids."""

    @abstractmethod
    def add_subject(self, names: list[str], normal: str, metadata: dict[str, Any] | None) -> None:
        """Create subject `normal` (SubjectExistsError when `names` finds one)."""

    @abstractmethod
    def update_metadata(self, names: list[str], metadata: dict[str, Any] | None) -> None:
        """Merge `metadata` into the subject's (SubjectNotFoundError if absent)."""

    @abstractmethod
    def remove_subject(self, names: list[str]) -> int:
        """Delete the subject and its faces (SubjectNotFoundError if absent); faces removed."""

    @abstractmethod
    def remove_faces(self, face_ids: list[int]) -> int:
        """Delete faces by id (subjects stay); how many existed."""

    # -- search ------------------------------------------------------------------------------

    @abstractmethod
    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        """For each unit query, the `top_k` subjects ranked by their best face's cosine
        similarity, best first (fewer when the gallery has fewer)."""

    @abstractmethod
    def index_status(self) -> dict[str, Any]:
        """Bring the search index up to date; {"kind", "faces", "generation", ...}."""

    @abstractmethod
    def rebuild_index(self) -> None:
        """Rebuild the search index from the stored faces."""

    def save_index(self) -> None:
        """Persist a cached index (nothing to do where the index lives in the database)."""
        return None


BACKENDS: Registry[type[GalleryBackend]] = Registry(
    "gallery back end", package="facesphere.gallery.backends"
)
list_backends = BACKENDS.names
# The back end of plain file paths.
FILE_BACKEND = "sqlite"


def is_url(target: str | Path) -> bool:
    """Whether `target` is a back end's URL (a string starting like `scheme://`), not a file."""
    return isinstance(target, str) and _URL.match(target) is not None


def register_backend(name: str) -> Callable[[type[GalleryBackend]], type[GalleryBackend]]:
    """Class decorator adding a back end under `name` (its `schemes` select it by URL)."""
    return BACKENDS.register(name)


def backend_for(target: str | Path) -> type[GalleryBackend]:
    """The back end of `target`: a `Path`, or a string without `scheme://`, is a file of the
    file back end; a URL picks the back end registered for its scheme (GalleryError for
    one that none takes)."""
    found = _URL.match(target) if isinstance(target, str) else None
    if found is None:
        return BACKENDS.factory(FILE_BACKEND)
    scheme = found.group(1).lower()
    for name in list_backends():
        backend = BACKENDS.factory(name)
        if scheme in backend.schemes:
            return backend
    known = sorted(s for n in list_backends() for s in BACKENDS.factory(n).schemes)
    raise GalleryError(f"no gallery back end for {scheme}:// URLs; known: {', '.join(known)}")
