"""`Gallery`: enrolled subjects and their face embeddings, identified by cosine similarity.

`Gallery` holds the rules every back end shares (subject names and metadata, the model check,
embedding normalisation, thresholds from the model card); where the data lives is its back end
(`gallery.backend`): a file path opens the embedded SQLite + FAISS back end, a
`postgresql://...?gallery=name` URL the PostgreSQL + pgvector one.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facesphere.cards import ModelCard, Threshold
from facesphere.errors import ConfigError
from facesphere.gallery.backend import GalleryBackend, GalleryMeta, backend_for, now
from facesphere.gallery.errors import (
    DuplicateFaceError,
    GalleryError,
    GalleryExistsError,
    ModelMismatchError,
    SubjectNotFoundError,
)
from facesphere.gallery.records import FaceRecord, Identification, Match, Subject
from facesphere.gallery.rules import check_metadata, lookup_names, subject_name

__all__ = ["FaceRecord", "Gallery", "Identification", "Match", "Subject"]

DEFAULT_MODEL = "dlib-resnet"
DEFAULT_MODEL_VERSION = "1"
DEFAULT_DIM = 128

# Face ids are positive 64-bit integers on every back end: no face has an id outside this range
# (asked for one, e.g. from a URL, it is simply not found rather than a database error).
_FACE_IDS = range(1, 2**63)

# How far from 1 the norm of an embedding taken as already unit may be (float32 rounding).
_UNIT_TOLERANCE = 1e-6


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
    """A face gallery at `target`, which must exist (see `create`): a file path (SQLite +
    FAISS) or a back end's URL such as `postgresql://user@host/db?gallery=name`.

    Thread-safe (one lock per instance) and safe to share between processes (each write one
    transaction; searches see what other processes committed).
    """

    def __init__(self, target: str | Path) -> None:
        self.backend: GalleryBackend = backend_for(target)(target)
        self._lock = threading.RLock()
        meta = self.backend.meta
        self.location: str = self.backend.location
        self.gallery_id: str = meta.gallery_id
        self.model: str = meta.model
        self.model_version: str = meta.model_version
        self.dim: int = meta.dim
        self.created_at: str = meta.created_at
        self._card_json = meta.card_json

    # -- creation and opening ----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        target: str | Path,
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
        if not model or not str(model).strip():
            raise GalleryError("the model name must not be empty")
        if int(dim) < 1:
            raise GalleryError(f"the embedding dimension must be positive, got {dim}")
        meta = GalleryMeta(
            uuid.uuid4().hex,
            str(model),
            str(model_version),
            int(dim),
            now(),
            None if card is None else card.to_json(),
        )
        if backend_for(target).create(target, meta):
            if not exist_ok:
                raise GalleryExistsError(f"a gallery already exists at {target}")
            gallery = cls(target)
            try:
                gallery.check_model(model, model_version, dim)
            except BaseException:
                gallery.close()
                raise
            return gallery
        return cls(target)

    @staticmethod
    def exists(target: str | Path) -> bool:
        """Whether something that may be a gallery is at `target`."""
        return backend_for(target).exists(target)

    def close(self) -> None:
        """Save what the back end caches and close its connection."""
        with self._lock:
            self.backend.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return self.backend.face_count()

    def subject_count(self) -> int:
        """The number of subjects with at least one face (those a query can match)."""
        with self._lock:
            return self.backend.subject_count()

    def __repr__(self) -> str:
        return f"Gallery({self.location!r}, model={self.model!r}, dim={self.dim})"

    def on_disk(self) -> bool:
        """Whether the gallery this instance opened is still there (not deleted or replaced)."""
        with self._lock:
            return self.backend.present()

    def delete(self) -> None:
        """Close the gallery and remove all that holds it; a process that still has it open
        stops finding it."""
        with self._lock:
            self.backend.delete()

    def files(self) -> list[Path]:
        """The local files that hold this gallery (none for a database server's)."""
        with self._lock:
            return self.backend.files()

    def generation(self) -> int:
        """The gallery's change counter (bumped by every face insert or delete)."""
        with self._lock:
            return self.backend.generation()

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
                f"gallery {self.location} holds {self.model} embeddings without a model card; "
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
                f"gallery {self.location} holds {self.model} embeddings, not {model}"
            )
        if model_version is not None and str(model_version) != self.model_version:
            raise ModelMismatchError(
                f"gallery {self.location} holds {self.model} version {self.model_version} "
                f"embeddings, not version {model_version}"
            )
        if dim is not None and int(dim) != self.dim:
            raise ModelMismatchError(
                f"gallery {self.location} holds {self.dim}-d embeddings, not {int(dim)}-d"
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
        of `sha256`, `box` (x1, y1, x2, y2) and `score`; metadata: merged into the subject's;
        model / model_version: what made the embeddings (None: the gallery's own);
        thumbnails: per face, a small JPEG of it or None (`gallery.enroll.face_thumbnail`).
        A new subject's name and the metadata follow `gallery.rules` (else
        InvalidSubjectError); a photo (`sha256`) given twice or already enrolled for the
        subject: DuplicateFaceError.
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
        with self._lock:
            return self.backend.enroll(
                lookup_names(subject),
                name,
                vectors,
                rows,
                thumbnails,
                meta_update,
                create_subject,
                now(),
            )

    def add_subject(self, name: str, metadata: Mapping[str, Any] | None = None) -> Subject:
        """Create a subject without faces (SubjectExistsError if the name is taken; the name
        and metadata follow `gallery.rules`, else InvalidSubjectError)."""
        normal = subject_name(name)
        meta = check_metadata(metadata)
        with self._lock:
            self.backend.add_subject(lookup_names(name), normal, meta)
            return self.subject(normal)

    def update_metadata(self, name: str, metadata: Mapping[str, Any]) -> Subject:
        """Merge `metadata` into an existing subject's (SubjectNotFoundError if absent)."""
        meta = check_metadata(metadata)
        with self._lock:
            self.backend.update_metadata(lookup_names(name), meta)
            return self.subject(name)

    def enrolled_photos(self, name: str) -> set[str]:
        """The sha256 digests of the photos enrolled for subject `name` (none if absent)."""
        with self._lock:
            return self.backend.enrolled_photos(lookup_names(name))

    def face_thumbnail(self, face_id: int) -> bytes | None:
        """The JPEG stored with face `face_id` at enrollment (None: no such face or none)."""
        if int(face_id) not in _FACE_IDS:
            return None
        with self._lock:
            return self.backend.face_thumbnail(int(face_id))

    # -- removal -----------------------------------------------------------------------------

    def remove_subject(self, name: str) -> int:
        """Delete a subject and its faces; returns the number of faces removed."""
        with self._lock:
            return self.backend.remove_subject(lookup_names(name))

    def remove_faces(self, face_ids: Sequence[int]) -> int:
        """Delete faces by id (subjects stay, even without faces); returns how many existed."""
        wanted = sorted(i for i in {int(i) for i in face_ids} if i in _FACE_IDS)
        if not wanted:
            return 0
        with self._lock:
            return self.backend.remove_faces(wanted)

    # -- the index ---------------------------------------------------------------------------

    def sync_index(self) -> dict[str, Any]:
        """Bring the search index up to date now; returns a short description."""
        with self._lock:
            return self.backend.index_status()

    def rebuild_index(self) -> None:
        """Rebuild the search index from the stored faces."""
        with self._lock:
            self.backend.rebuild_index()

    def save_index(self) -> None:
        """Persist a cached index (the SQLite back end's FAISS files; nothing elsewhere)."""
        with self._lock:
            self.backend.save_index()

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
            ranked = self.backend.search(queries, int(top_k))
        results = []
        for matches in ranked:
            top = matches[0].score if matches else None
            identity = matches[0].subject if matches and top >= cut else None
            results.append(Identification(identity, top, cut, matches))
        return results

    # -- reading -----------------------------------------------------------------------------

    def subjects(self) -> list[Subject]:
        """All subjects with their face counts, by name."""
        with self._lock:
            return self.backend.subjects()

    def subject(self, name: str) -> Subject:
        """One subject (SubjectNotFoundError if absent); `name` may be in any Unicode
        normal form."""
        with self._lock:
            found = self.backend.subject(lookup_names(name))
        if found is None:
            raise SubjectNotFoundError(f"no subject named {name!r}")
        return found

    def faces(self, subject: str | None = None, embeddings: bool = False) -> list[FaceRecord]:
        """Enrolled faces (of one subject, or all), by id; with their embeddings if asked."""
        with self._lock:
            subject_id = None if subject is None else self.subject(subject).id
            return self.backend.faces(subject_id, embeddings)

    def info(self) -> dict[str, Any]:
        """The gallery's model, dimension, counts and generation."""
        with self._lock:
            return self._info(self.backend.state())

    def snapshot(self) -> tuple[dict[str, Any], list[Subject], list[FaceRecord]]:
        """(info, subjects, faces with embeddings) read in one consistent transaction."""
        with self._lock:
            state, subjects, faces = self.backend.snapshot()
        return self._info(state), subjects, faces

    def _info(self, state: dict[str, int]) -> dict[str, Any]:
        return {
            "path": self.location,
            "model": self.model,
            "model_version": self.model_version,
            "dim": self.dim,
            "created_at": self.created_at,
            **state,
        }

    def export(self, out: str | Path, fmt: str | None = None) -> dict[str, int]:
        """Write subjects, metadata and embeddings to `out` as JSON or npz (`fmt`, else from
        the suffix); returns the counts written."""
        from facesphere.gallery.export import export_gallery

        return export_gallery(self, Path(out), fmt)
