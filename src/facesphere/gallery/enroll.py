"""Enroll people from photos: detect the largest face of each image, embed, store."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from facesphere.errors import ImageError
from facesphere.gallery.errors import EnrollImagesError
from facesphere.gallery.store import Gallery
from facesphere.io.files import file_sha256
from facesphere.io.image import ImageInput, describe_source

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import FaceAnalyzer


@dataclass
class EnrollReport:
    """What an enrollment did: the new face ids, the images used and the images skipped."""

    subject: str
    face_ids: list[int]
    enrolled: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "subject": self.subject,
            "face_ids": self.face_ids,
            "enrolled": self.enrolled,
            "unreadable": [{"image": s, "reason": r} for s, r in self.unreadable],
            "no_face": self.no_face,
        }


def image_sha256(image: ImageInput, pixels: np.ndarray) -> str:
    """SHA-256 of a file's bytes, of encoded bytes, or else of the decoded pixels."""
    if isinstance(image, (str, os.PathLike)):
        return file_sha256(image)
    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha256(bytes(image)).hexdigest()
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def enroll_images(
    gallery: Gallery,
    analyzer: FaceAnalyzer,
    subject: str,
    images: Sequence[ImageInput],
    metadata: Mapping[str, Any] | None = None,
    skip_bad: bool = False,
    create_subject: bool = True,
    labels: Sequence[str] | None = None,
    load: Callable[[ImageInput], np.ndarray] | None = None,
) -> EnrollReport:
    """Enroll the largest face of each image as `subject`, in one transaction.

    An unreadable image or one without a face makes the whole request fail with
    EnrollImagesError listing them, unless `skip_bad`, which enrolls the others (and still fails
    when no image is usable). The analyzer's model must be the gallery's. `create_subject`:
    make the subject when it is new (else SubjectNotFoundError). labels: the images' names in
    the report (default: their paths or a description); load: decodes one image, raising
    ImageError when it is unusable (default: `analyzer.load`).
    """
    card = analyzer.card
    gallery.check_model(*card.model_key)
    if labels is None:
        labels = [describe_source(image) for image in images]
    elif len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    decode = analyzer.load if load is None else load
    vectors: list[np.ndarray] = []
    sources: list[dict[str, Any]] = []
    used: list[str] = []
    unreadable: list[tuple[str, str]] = []
    no_face: list[str] = []
    for image, label in zip(images, labels):
        try:
            pixels = decode(image)
            sha = image_sha256(image, pixels)
        except ImageError as exc:
            unreadable.append((label, exc.reason))
            continue
        except OSError as exc:
            unreadable.append((label, exc.strerror or str(exc)))
            continue
        faces = analyzer.analyze(pixels)
        if not faces:
            no_face.append(label)
            continue
        face = faces[0]
        vectors.append(face.embedding)
        sources.append({"sha256": sha, "box": face.box, "score": face.score})
        used.append(label)
    if ((unreadable or no_face) and not skip_bad) or not vectors:
        raise EnrollImagesError(unreadable, no_face)
    face_ids = gallery.enroll(
        subject,
        np.stack(vectors),
        sources,
        metadata=metadata,
        create_subject=create_subject,
        model=card.name,
        model_version=card.version,
    )
    return EnrollReport(subject, face_ids, used, unreadable, no_face)
