"""Face detectors behind one registry: `cnn` (MMOD), `hog`, `thunder` (loaded on first use)."""

from facesphere.detect.base import Detection, FaceDetector
from facesphere.detect.registry import DETECTORS, create_detector, list_detectors, register_detector

__all__ = [
    "DETECTORS",
    "Detection",
    "FaceDetector",
    "create_detector",
    "list_detectors",
    "register_detector",
]
