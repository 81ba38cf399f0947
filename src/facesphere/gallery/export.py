"""Export a gallery's subjects, metadata and embeddings to JSON or npz."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facesphere.gallery.errors import GalleryError

if TYPE_CHECKING:
    from facesphere.gallery.store import Gallery

EXPORT_FORMAT = "facesphere-gallery"
EXPORT_VERSION = 1
FORMATS = ("json", "npz")


def export_format(out: Path, fmt: str | None) -> str:
    """`fmt`, or the format named by `out`'s suffix."""
    chosen = (fmt or out.suffix.lstrip(".")).lower()
    if chosen not in FORMATS:
        raise GalleryError(
            f"cannot tell the export format of {out}: use a .json or .npz name or give the format"
        )
    return chosen


def export_gallery(gallery: Gallery, out: Path, fmt: str | None = None) -> dict[str, int]:
    """Write a consistent snapshot of `gallery` to `out` (replaced whole, never half-written);
    returns {"subjects": n, "faces": m}."""
    chosen = export_format(out, fmt)
    info, subjects, faces = gallery.snapshot()
    header = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "gallery": info}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
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
            tmp.write_text(json.dumps(document))
        else:
            position = {s.name: i for i, s in enumerate(subjects)}
            nan4 = [np.nan] * 4
            with open(tmp, "wb") as handle:
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
