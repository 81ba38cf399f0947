"""Enroll people from photos: detect the face of each image, embed, store."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from facesphere.errors import ConfigError, ImageError
from facesphere.gallery.errors import EnrollImagesError, refused_images
from facesphere.gallery.rules import subject_name
from facesphere.gallery.store import Gallery
from facesphere.io.files import file_sha256
from facesphere.io.image import ImageInput, describe_source, jpeg_thumbnail

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import Face, FaceAnalyzer


@dataclass
class EnrollReport:
    """What an enrollment did: the new face ids, the images used and the images skipped
    (`duplicates`: photos already enrolled for the subject, or given twice)."""

    subject: str
    face_ids: list[int]
    enrolled: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "subject": self.subject,
            "face_ids": self.face_ids,
            "enrolled": self.enrolled,
            **refused_images(self.unreadable, self.no_face, self.several_faces),
            "duplicates": self.duplicates,
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


def face_thumbnail(analyzer: FaceAnalyzer, pixels: np.ndarray, face: Face) -> bytes:
    """A small JPEG of `face` in `pixels`: its chip aligned to the recognizer's (first)
    template, what a gallery stores beside the embedding to show the face."""
    return jpeg_thumbnail(analyzer.align(pixels, [face])[0][0])


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
    face: str | None = None,
) -> EnrollReport:
    """Enroll the face of each image as `subject`, in one transaction.

    An image with several faces is refused unless `face` says which to take: "largest" or
    "central" (see `main_face`). An unreadable image, one without a face or a refused one makes
    the whole request fail with EnrollImagesError listing them, unless `skip_bad`, which
    enrolls the others (and still fails when no image is usable). A photo already enrolled for
    the subject (same content digest), or given twice, is skipped and listed as a duplicate.
    The analyzer's model must be the gallery's. `create_subject`: make the subject when it is
    new (else SubjectNotFoundError). Each face is stored with a thumbnail (`face_thumbnail`).
    labels: the images' names in the report (default: their
    paths or a description); load: decodes one image, raising ImageError when it is unusable
    (default: `analyzer.load`).
    """
    from facesphere.pipeline.analyzer import MAIN_FACE_POLICIES, main_face

    if face is not None and face not in MAIN_FACE_POLICIES:
        raise ConfigError(f"face must be one of {', '.join(MAIN_FACE_POLICIES)}, not {face!r}")
    card = analyzer.card
    gallery.check_model(*card.model_key)
    subject_name(subject)  # refuse a bad name before any image is analysed
    known = gallery.enrolled_photos(subject)
    if labels is None:
        labels = [describe_source(image) for image in images]
    elif len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    decode = analyzer.load if load is None else load
    vectors: list[np.ndarray] = []
    sources: list[dict[str, Any]] = []
    thumbnails: list[bytes] = []
    used: list[str] = []
    unreadable: list[tuple[str, str]] = []
    no_face: list[str] = []
    several: list[str] = []
    duplicates: list[str] = []
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
        if sha in known:
            duplicates.append(label)
            continue
        faces = analyzer.analyze(pixels)
        if len(faces) > 1 and face is None:
            several.append(label)
            continue
        chosen = main_face(faces, pixels.shape[1], pixels.shape[0], face or "largest")
        if chosen is None:
            no_face.append(label)
            continue
        known.add(sha)
        vectors.append(chosen.embedding)
        sources.append({"sha256": sha, "box": chosen.box, "score": chosen.score})
        thumbnails.append(face_thumbnail(analyzer, pixels, chosen))
        used.append(label)
    refused = unreadable or no_face or several
    if (refused and not skip_bad) or (not vectors and not duplicates):
        raise EnrollImagesError(unreadable, no_face, several)
    report = EnrollReport(subject, [], used, unreadable, no_face, several, duplicates)
    if not vectors:  # every usable photo is enrolled already
        if metadata:
            gallery.update_metadata(subject, metadata)
        return report
    report.face_ids = gallery.enroll(
        subject,
        np.stack(vectors),
        sources,
        metadata=metadata,
        create_subject=create_subject,
        model=card.name,
        model_version=card.version,
        thumbnails=thumbnails,
    )
    return report
