"""Face detectors behind one registry."""

from facesphere.detect import dlib_detectors as _dlib_detectors  # noqa: F401 - registers
from facesphere.detect import thunder as _thunder  # noqa: F401 - registers
from facesphere.detect.base import Detection, FaceDetector
from facesphere.detect.registry import create_detector, list_detectors, register_detector

__all__ = ["Detection", "FaceDetector", "create_detector", "list_detectors", "register_detector"]
