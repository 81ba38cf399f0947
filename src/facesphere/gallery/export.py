"""Export a gallery's subjects, metadata and embeddings to JSON or npz, and import such a
file into a new gallery."""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facesphere.cards import ModelCard
from facesphere.errors import DataError, FacesphereError
from facesphere.gallery.backend import backend_for
from facesphere.gallery.errors import GalleryError, GalleryExistsError, ModelMismatchError
from facesphere.gallery.rules import check_metadata, subject_name
from facesphere.io.files import check_output
from facesphere.paths import make_private_dirs, open_private

if TYPE_CHECKING:
    from facesphere.gallery.store import Gallery

EXPORT_FORMAT = "facesphere-gallery"
EXPORT_VERSION = 1
FORMATS = ("json", "npz")
# What reading a file that is not an export (or a damaged one) may raise.
_MALFORMED = (
    OSError,
    ValueError,
    LookupError,
    TypeError,
    AttributeError,
    RecursionError,
    zipfile.BadZipFile,
)


def export_format(out: Path, fmt: str | None) -> str:
    """`fmt`, or the format named by `out`'s suffix."""
    chosen = (fmt or out.suffix.lstrip(".")).lower()
    if chosen not in FORMATS:
        raise GalleryError(
            f"cannot tell the export format of {out}: use a .json or .npz name or give the format"
        )
    return chosen


def export_gallery(gallery: Gallery, out: Path, fmt: str | None = None) -> dict[str, int]:
    """Write a consistent snapshot of `gallery` to `out` (replaced whole, never half-written,
    owner-only; never one of the gallery's own files); returns {"subjects": n, "faces": m}."""
    chosen = export_format(out, fmt)
    check_output(out, *gallery.files())
    info, subjects, faces = gallery.snapshot()
    header: dict[str, Any] = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "gallery": info}
    card = gallery.card
    if card is not None:
        header["card"] = card.to_dict()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        make_private_dirs(out.parent)
        if chosen == "json":
            by_subject: dict[str, list[dict[str, Any]]] = {s.name: [] for s in subjects}
            for face in faces:
                entry = face.to_dict(with_embedding=True)
                del entry["subject"]
                by_subject[face.subject].append(entry)
            document = {
                **header,
                "subjects": [{**s.to_dict(), "faces": by_subject[s.name]} for s in subjects],
            }
            with open_private(tmp) as handle:
                handle.write(json.dumps(document).encode())
        else:
            position = {s.name: i for i, s in enumerate(subjects)}
            nan4 = [np.nan] * 4
            with open_private(tmp) as handle:
                np.savez_compressed(
                    handle,
                    header=np.array(json.dumps(header)),
                    subjects=np.array([s.name for s in subjects], dtype=str),
                    subject_metadata=np.array([json.dumps(s.metadata) for s in subjects], str),
                    subject_created_at=np.array([s.created_at for s in subjects], dtype=str),
                    face_ids=np.array([f.id for f in faces], np.int64),
                    face_subject=np.array([position[f.subject] for f in faces], np.int64),
                    embeddings=np.array([f.embedding for f in faces], np.float32).reshape(
                        -1, gallery.dim
                    ),
                    boxes=np.array([f.box or nan4 for f in faces], np.float32).reshape(-1, 4),
                    scores=np.array(
                        [np.nan if f.score is None else f.score for f in faces], np.float32
                    ),
                    sha256=np.array([f.sha256 or "" for f in faces], dtype=str),
                    models=np.array([f"{f.model}:{f.model_version}" for f in faces], dtype=str),
                )
        os.replace(tmp, out)
    except OSError as exc:
        raise GalleryError(f"cannot write {out}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return {"subjects": len(subjects), "faces": len(faces)}


@dataclass
class _Subject:
    """One subject of an export file, checked: its faces' vectors (N, dim) and sources."""

    name: str
    metadata: dict[str, Any]
    vectors: list[np.ndarray] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)


def import_gallery(source: Path, target: str | Path, fmt: str | None = None) -> dict[str, int]:
    """Read a file that `export_gallery` wrote into the gallery `target` (a file, or a back
    end's URL), which must be new or hold no subject; it is made for the file's model (and
    model card). The whole file is checked before anything is stored: DataError when it is
    not such an export, or holds a subject, metadata or embedding a gallery refuses;
    ModelMismatchError when `target` exists for another model. A photo listed twice for one
    subject is stored once. Returns {"subjects": n, "faces": m, "duplicates": d}."""
    from facesphere.gallery.store import Gallery

    chosen = export_format(source, fmt)
    if not backend_for(target).schemes:  # a file: never the export itself
        check_output(target, source)
    try:
        header, subjects = _read_json(source) if chosen == "json" else _read_npz(source)
    except FileNotFoundError as exc:
        raise DataError(f"{source}: not found") from exc
    except _MALFORMED as exc:
        raise DataError(f"{source} is not a facesphere gallery export ({chosen}): {exc}") from exc
    info = header["gallery"]
    model, version, dim = info["model"], info["model_version"], info["dim"]
    card = _header_card(source, header, (model, version, dim))
    names = [subject.name for subject in subjects]
    if len(set(names)) != len(names):
        raise DataError(f"{source} lists a subject twice (names are compared in NFC form)")
    duplicates = _dedupe(subjects)
    if Gallery.exists(target):
        gallery = Gallery(target)
        try:
            gallery.check_model(model, version, dim)
            if gallery.info()["subjects"]:
                raise GalleryExistsError(
                    f"{target} already holds subjects: import into a new gallery"
                )
        except BaseException:
            gallery.close()
            raise
    elif card is not None:
        gallery = Gallery.create(target, card=card)
    else:
        gallery = Gallery.create(target, model, version, dim)
    with gallery:
        added: list[str] = []
        try:
            for subject in subjects:
                gallery.add_subject(subject.name, subject.metadata)
                added.append(subject.name)
                if subject.vectors:
                    gallery.enroll(subject.name, np.stack(subject.vectors), subject.sources)
        except BaseException:
            for name in added:  # all or nothing: the gallery was empty
                gallery.remove_subject(name)
            raise
        faces = sum(len(s.vectors) for s in subjects)
    return {"subjects": len(subjects), "faces": faces, "duplicates": duplicates}


def _check_header(header: Any) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ValueError(f"no {EXPORT_FORMAT!r} header")
    if header.get("version") != EXPORT_VERSION:
        raise ValueError(f"export version {header.get('version')!r}, not {EXPORT_VERSION}")
    info = header.get("gallery")
    if not isinstance(info, dict):
        raise ValueError("no gallery description")
    model, version, dim = info.get("model"), info.get("model_version"), info.get("dim")
    if not (isinstance(model, str) and isinstance(version, str) and isinstance(dim, int)):
        raise ValueError("no model name, version and dimension")
    if dim < 1:
        raise ValueError(f"dimension {dim}")
    return header


def _header_card(
    source: Path, header: dict[str, Any], key: tuple[str, str, int]
) -> ModelCard | None:
    """The model card the export carries (None for one without), checked against its model."""
    if "card" not in header:
        return None
    try:
        card = ModelCard.from_dict(header["card"])
    except (FacesphereError, TypeError, ValueError) as exc:
        raise DataError(f"{source}: its model card is unreadable: {exc}") from exc
    if card.model_key != key:
        raise DataError(
            f"{source}: its model card is for {card.name} v{card.version}, not {key[0]}"
        )
    return card


def _subject(name: Any, metadata: Any) -> _Subject:
    try:
        return _Subject(subject_name(name), check_metadata(metadata) or {})
    except GalleryError as exc:
        raise ValueError(f"subject {name!r}: {exc}") from exc


def _add_face(
    subject: _Subject, embedding: Any, source: dict[str, Any], model: str, info: dict[str, Any]
) -> None:
    """Check one face (`model`: its "name:version") and add it to `subject`."""
    if model != f"{info['model']}:{info['model_version']}":
        raise ModelMismatchError(f"a face of {subject.name!r} is a {model} embedding")
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if len(vector) != info["dim"] or not np.isfinite(vector).all():
        raise ValueError(f"a face of {subject.name!r} is not {info['dim']} finite numbers")
    subject.vectors.append(vector)
    subject.sources.append(source)


def _read_json(source: Path) -> tuple[dict[str, Any], list[_Subject]]:
    document = _check_header(json.loads(source.read_text()))
    subjects = []
    for entry in document["subjects"]:
        subject = _subject(entry["name"], entry.get("metadata"))
        for face in entry["faces"]:
            origin = {key: face.get(key) for key in ("sha256", "box", "score")}
            model = f"{face['model']}:{face['model_version']}"
            _add_face(subject, face["embedding"], origin, model, document["gallery"])
        subjects.append(subject)
    return document, subjects


def _read_npz(source: Path) -> tuple[dict[str, Any], list[_Subject]]:
    with np.load(source, allow_pickle=False) as data:
        header = _check_header(json.loads(str(data["header"])))
        subjects = [
            _subject(str(name), json.loads(str(meta)))
            for name, meta in zip(data["subjects"], data["subject_metadata"], strict=True)
        ]
        rows = zip(
            data["face_subject"],
            data["embeddings"],
            data["boxes"],
            data["scores"],
            data["sha256"],
            data["models"],
            strict=True,
        )
        for owner, embedding, box, score, sha, model in rows:
            if not 0 <= owner < len(subjects):
                raise ValueError(f"a face belongs to subject number {owner}, which is absent")
            origin = {
                "sha256": str(sha) or None,
                "box": None if np.isnan(box).all() else [float(v) for v in box],
                "score": None if math.isnan(score) else float(score),
            }
            _add_face(subjects[owner], embedding, origin, str(model), header["gallery"])
    return header, subjects


def _dedupe(subjects: list[_Subject]) -> int:
    """Drop the faces whose photo (sha256) is listed twice for one subject (galleries made
    before duplicates were refused may hold such); returns how many were dropped."""
    dropped = 0
    for subject in subjects:
        seen: set[str] = set()
        keep = []
        for i, source in enumerate(subject.sources):
            sha = source.get("sha256")
            if sha is not None and sha in seen:
                dropped += 1
                continue
            if sha is not None:
                seen.add(sha)
            keep.append(i)
        subject.vectors = [subject.vectors[i] for i in keep]
        subject.sources = [subject.sources[i] for i in keep]
    return dropped
