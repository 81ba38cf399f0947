"""facesphere: face detection, alignment, embedding on the unit hypersphere and recognition.

>>> from facesphere import FaceAnalyzer
>>> analyzer = FaceAnalyzer()
>>> faces = analyzer.detect("photo.jpg")          # boxes, scores, five landmarks
>>> vectors = analyzer.embed("photo.jpg")         # (N, 128) unit vectors
>>> analyzer.verify("a.jpg", "b.jpg").same        # same person?
"""

from facesphere.analyzer import (
    DEFAULT_THRESHOLD,
    Face,
    FaceAnalyzer,
    NoFaceError,
    Verification,
    verify,
)
from facesphere.gallery import Gallery, enroll_images
from facesphere.io.image import ImageError, load_image

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_THRESHOLD",
    "Face",
    "FaceAnalyzer",
    "Gallery",
    "ImageError",
    "NoFaceError",
    "Verification",
    "__version__",
    "enroll_images",
    "load_image",
    "verify",
]
