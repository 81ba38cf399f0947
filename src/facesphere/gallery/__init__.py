"""Face galleries: enrolled subjects in SQLite with a FAISS index, or in PostgreSQL + pgvector
(`facesphere.gallery.backends`), identified open-set.

>>> from facesphere.gallery import Gallery
>>> gallery = Gallery.create("people.db")            # dlib-resnet, 128-d
>>> gallery.enroll("ada", vectors)                    # one transaction, face ids back
>>> gallery.identify(query)[0].identity               # a name, or None when unknown
"""

from facesphere.gallery.enroll import EnrollReport, enroll_files, enroll_images
from facesphere.gallery.errors import (
    EnrollImagesError,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    ModelMismatchError,
    SubjectExistsError,
    SubjectNotFoundError,
)
from facesphere.gallery.records import FaceRecord, Identification, Match, Subject
from facesphere.gallery.store import Gallery

__all__ = [
    "EnrollImagesError",
    "EnrollReport",
    "FaceRecord",
    "Gallery",
    "GalleryError",
    "GalleryExistsError",
    "GalleryNotFoundError",
    "Identification",
    "Match",
    "ModelMismatchError",
    "Subject",
    "SubjectExistsError",
    "SubjectNotFoundError",
    "enroll_files",
    "enroll_images",
]
