"""facesphere: face detection, alignment, embedding on the unit hypersphere and recognition.

>>> from facesphere import FaceAnalyzer
>>> analyzer = FaceAnalyzer()
>>> faces = analyzer.detect("photo.jpg")          # boxes, scores, five landmarks
>>> vectors = analyzer.embed("photo.jpg")         # (N, 256) unit vectors
>>> analyzer.verify("a.jpg", "b.jpg").same        # same person?

Names resolve lazily, so ``import facesphere`` stays cheap (no torch, FAISS or SQLite until a
name that needs them is used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Calibration": "facesphere.cards",
    "ConfigError": "facesphere.errors",
    "Face": "facesphere.pipeline.analyzer",
    "FaceAnalyzer": "facesphere.pipeline.analyzer",
    "FacesphereError": "facesphere.errors",
    "Gallery": "facesphere.gallery.store",
    "GalleryError": "facesphere.errors",
    "ImageError": "facesphere.errors",
    "ModelCard": "facesphere.cards",
    "ModelError": "facesphere.errors",
    "NoFaceError": "facesphere.errors",
    "Threshold": "facesphere.cards",
    "Verification": "facesphere.pipeline.analyzer",
    "create_detector": "facesphere.detect.registry",
    "create_landmarker": "facesphere.landmarks.registry",
    "create_recognizer": "facesphere.recognize.registry",
    "enroll_images": "facesphere.gallery.enroll",
    "list_detectors": "facesphere.detect.registry",
    "list_landmarkers": "facesphere.landmarks.registry",
    "list_recognizers": "facesphere.recognize.registry",
    "load_image": "facesphere.io.image",
    "verify": "facesphere.pipeline.analyzer",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facesphere' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
