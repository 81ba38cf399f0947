"""Exceptions of the gallery package; every one is a `GalleryError` with a one-line message."""

from __future__ import annotations

from facesphere.errors import GalleryError

__all__ = [
    "BackendUnavailableError",
    "DuplicateFaceError",
    "EnrollImagesError",
    "GalleryError",
    "GalleryExistsError",
    "GalleryNotFoundError",
    "InvalidSubjectError",
    "ModelMismatchError",
    "NotAGalleryError",
    "SubjectExistsError",
    "SubjectNotFoundError",
]


class GalleryNotFoundError(GalleryError):
    """The gallery database does not exist (and creating it was not asked for)."""

    http_status = 404


class NotAGalleryError(GalleryError):
    """The file is not a facesphere gallery: not SQLite, or another application's database."""


class BackendUnavailableError(GalleryError):
    """The gallery's database failed: unreachable, or a lock not granted in time."""

    http_status = 503


class GalleryExistsError(GalleryError):
    """`Gallery.create(..., exist_ok=False)` found a gallery already there."""


class ModelMismatchError(GalleryError):
    """Embeddings of another model, model version or dimension than the gallery's."""


class SubjectNotFoundError(GalleryError):
    """No subject of that name in the gallery."""

    http_status = 404


class SubjectExistsError(GalleryError):
    """`add_subject` found a subject of that name already."""


class InvalidSubjectError(GalleryError):
    """A subject name or metadata that the gallery's rules refuse (see `gallery.rules`)."""

    http_status = 422


class DuplicateFaceError(GalleryError):
    """The same photo (same content digest) is already enrolled for that subject."""


def duplicate_photo(sha256: str) -> DuplicateFaceError:
    """The error for a photo (by digest) enrolled for the subject already."""
    return DuplicateFaceError(
        f"the photo with sha256 {sha256[:12]}... is already enrolled for this subject"
    )


class EnrollImagesError(GalleryError):
    """Some images of an enrollment request were unreadable, held no face or several.

    `unreadable` holds `(source, reason)` pairs, `no_face` the sources without a face,
    `several_faces` the sources with more than one face (and no face choice asked for).
    """

    http_status = 422

    def __init__(
        self,
        unreadable: list[tuple[str, str]],
        no_face: list[str],
        several_faces: list[str] | None = None,
    ) -> None:
        several_faces = several_faces or []
        parts = []
        if unreadable:
            parts.append("unreadable: " + "; ".join(f"{s} ({r})" for s, r in unreadable))
        if no_face:
            parts.append("no face found in: " + ", ".join(no_face))
        if several_faces:
            parts.append(
                "several faces (choose one with face=largest|central) in: "
                + ", ".join(several_faces)
            )
        super().__init__(" | ".join(parts) or "nothing to enroll")
        self.unreadable = unreadable
        self.no_face = no_face
        self.several_faces = several_faces

    def details(self) -> dict[str, list]:
        """JSON-ready lists of the refused images."""
        return refused_images(self.unreadable, self.no_face, self.several_faces)


def refused_images(
    unreadable: list[tuple[str, str]], no_face: list[str], several_faces: list[str]
) -> dict[str, list]:
    """The JSON-ready lists of the images an enrollment refused (its report and its error)."""
    return {
        "unreadable": [{"image": s, "reason": r} for s, r in unreadable],
        "no_face": no_face,
        "several_faces": several_faces,
    }
