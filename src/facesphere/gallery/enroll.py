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
from facesphere.io.files import file_problem, file_sha256
from facesphere.io.image import ImageInput, describe_source, jpeg_thumbnail

if TYPE_CHECKING:
    from facesphere.pipeline.analyzer import Face, FaceAnalyzer
    from facesphere.pipeline.executors import Executor
    from facesphere.pipeline.journal import Journal


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


class _Selection:
    """Sorts the images of one request into the faces to enroll and the images refused or
    skipped, in the order they come; `known`: the digests of the subject's photos."""

    def __init__(self, subject: str, known: set[str], face: str | None) -> None:
        self.known = known
        self.face = face
        self.vectors: list[np.ndarray] = []
        self.sources: list[dict[str, Any]] = []
        self.thumbnails: list[bytes] = []
        self.report = EnrollReport(subject, [], [])

    def add(
        self,
        label: str,
        sha: str,
        faces: list[Face],
        size: tuple[int, int],
        thumbnail: Callable[[Face], bytes],
    ) -> None:
        """An analysed image of `size` (width, height): its face is taken, with `thumbnail` of
        it, unless it has none, several (and no face policy), or the photo is enrolled already
        or was given before."""
        from facesphere.pipeline.analyzer import main_face

        if sha in self.known:
            self.report.duplicates.append(label)
            return
        if len(faces) > 1 and self.face is None:
            self.report.several_faces.append(label)
            return
        chosen = main_face(faces, *size, self.face or "largest")
        if chosen is None:
            self.report.no_face.append(label)
            return
        self.known.add(sha)
        self.vectors.append(chosen.embedding)
        self.sources.append({"sha256": sha, "box": chosen.box, "score": chosen.score})
        self.thumbnails.append(thumbnail(chosen))
        self.report.enrolled.append(label)

    def commit(
        self,
        gallery: Gallery,
        analyzer: FaceAnalyzer,
        metadata: Mapping[str, Any] | None,
        skip_bad: bool,
        create_subject: bool,
    ) -> EnrollReport:
        """Enroll the faces taken, in one transaction; EnrollImagesError when an image was
        refused and not `skip_bad`, or when none is usable."""
        report = self.report
        refused = report.unreadable or report.no_face or report.several_faces
        if (refused and not skip_bad) or (not self.vectors and not report.duplicates):
            raise EnrollImagesError(report.unreadable, report.no_face, report.several_faces)
        if not self.vectors:  # every usable photo is enrolled already
            if metadata:
                gallery.update_metadata(report.subject, metadata)
            return report
        card = analyzer.card
        report.face_ids = gallery.enroll(
            report.subject,
            np.stack(self.vectors),
            self.sources,
            metadata=metadata,
            create_subject=create_subject,
            model=card.name,
            model_version=card.version,
            thumbnails=self.thumbnails,
        )
        return report


def _selection(
    gallery: Gallery, analyzer: FaceAnalyzer, subject: str, face: str | None
) -> _Selection:
    """The selection of a request, after the checks that need no image: the analyzer's model
    is the gallery's, the subject's name is valid, the face policy is known."""
    from facesphere.pipeline.analyzer import MAIN_FACE_POLICIES

    if face is not None and face not in MAIN_FACE_POLICIES:
        raise ConfigError(f"face must be one of {', '.join(MAIN_FACE_POLICIES)}, not {face!r}")
    gallery.check_model(*analyzer.card.model_key)
    subject_name(subject)  # refuse a bad name before any image is analysed
    return _Selection(subject, gallery.enrolled_photos(subject), face)


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
    new (else SubjectNotFoundError). labels: the images' names in the report (default: their
    paths or a description); load: decodes one image, raising ImageError when it is unusable
    (default: `analyzer.load`).
    """
    selection = _selection(gallery, analyzer, subject, face)
    if labels is None:
        labels = [describe_source(image) for image in images]
    elif len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    decode = analyzer.load if load is None else load
    for image, label in zip(images, labels):
        try:
            pixels = decode(image)
            sha = image_sha256(image, pixels)
        except ImageError as exc:
            selection.report.unreadable.append((label, exc.reason))
            continue
        except OSError as exc:
            selection.report.unreadable.append((label, exc.strerror or str(exc)))
            continue
        if sha in selection.known:
            selection.report.duplicates.append(label)
            continue
        faces = analyzer.analyze(pixels)
        selection.add(
            label,
            sha,
            faces,
            (pixels.shape[1], pixels.shape[0]),
            lambda chosen, pixels=pixels: face_thumbnail(analyzer, pixels, chosen),
        )
    return selection.commit(gallery, analyzer, metadata, skip_bad, create_subject)


def enroll_files(
    gallery: Gallery,
    analyzer: FaceAnalyzer,
    subject: str,
    paths: Sequence[str],
    metadata: Mapping[str, Any] | None = None,
    skip_bad: bool = False,
    face: str | None = None,
    executor: Executor | None = None,
    journal: Journal | None = None,
    progress: bool = True,
) -> EnrollReport:
    """`enroll_images` for image files, analysed by `executor` (None: a local process pool;
    see `analyze_files`) and reported the same way; photos enrolled already are not analysed
    again, nor those `journal` holds from an interrupted run. Still one transaction."""
    from facesphere.pipeline.runner import analyze_files

    selection = _selection(gallery, analyzer, subject, face)
    paths = [str(p) for p in paths]
    digests: dict[str, str] = {}
    for path in paths:
        if file_problem(path) is None:  # else the analysis reports why it cannot be read
            try:
                digests[path] = file_sha256(path)
            except OSError:
                continue
    todo = [p for p in dict.fromkeys(paths) if digests.get(p) not in selection.known]
    analysed = analyze_files(
        todo,
        analyzer.config,
        executor,
        keep="all",
        progress=progress,
        description="enroll",
        analyzer=analyzer,
        journal=journal,
    )
    results = {result.path: result for result in analysed}
    for path in paths:
        result = results.get(path)
        if result is None:  # not analysed: enrolled before this request
            selection.report.duplicates.append(path)
        elif result.error is not None:
            selection.report.unreadable.append((path, result.error))
        elif path not in digests:  # read by the analysis but not here: changed meanwhile
            selection.report.unreadable.append((path, "cannot read file"))
        else:
            selection.add(
                path,
                digests[path],
                result.faces,
                (result.width, result.height),
                # the analysis ran elsewhere: the chosen face's photo is read again for its chip
                lambda chosen, path=path: face_thumbnail(analyzer, analyzer.load(path), chosen),
            )
    return selection.commit(gallery, analyzer, metadata, skip_bad, create_subject=True)
