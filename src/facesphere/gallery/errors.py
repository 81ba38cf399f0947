"""Exceptions of the gallery package; every one is a `GalleryError` with a one-line message."""

from __future__ import annotations

from facesphere.errors import GalleryError

__all__ = [
    "EnrollImagesError",
    "GalleryError",
    "GalleryExistsError",
    "GalleryNotFoundError",
    "ModelMismatchError",
    "SubjectExistsError",
    "SubjectNotFoundError",
]


class GalleryNotFoundError(GalleryError):
    """The gallery database does not exist (and creating it was not asked for)."""

    http_status = 404


class GalleryExistsError(GalleryError):
    """`Gallery.create(..., exist_ok=False)` found a gallery already there."""


class ModelMismatchError(GalleryError):
    """Embeddings of another model, model version or dimension than the gallery's."""


class SubjectNotFoundError(GalleryError):
    """No subject of that name in the gallery."""

    http_status = 404


class SubjectExistsError(GalleryError):
    """`add_subject` found a subject of that name already."""


class EnrollImagesError(GalleryError):
    """Some images of an enrollment request were unreadable or held no face.

    `unreadable` holds `(source, reason)` pairs, `no_face` the sources without a face.
    """

    http_status = 422

    def __init__(self, unreadable: list[tuple[str, str]], no_face: list[str]) -> None:
        parts = []
        if unreadable:
            parts.append("unreadable: " + "; ".join(f"{s} ({r})" for s, r in unreadable))
        if no_face:
            parts.append("no face found in: " + ", ".join(no_face))
        super().__init__(" | ".join(parts) or "nothing to enroll")
        self.unreadable = unreadable
        self.no_face = no_face
