"""The detector registry: `register_detector`, `create_detector`, `list_detectors`."""

from __future__ import annotations

from typing import Any

from facesphere.detect.base import FaceDetector
from facesphere.registry import Registry

DETECTORS: Registry[FaceDetector] = Registry("detector", package="facesphere.detect")
register_detector = DETECTORS.register
list_detectors = DETECTORS.names


def create_detector(name: str, **options: Any) -> FaceDetector:
    """Build the detector registered as `name` (`cnn`, `hog`, `thunder`) with its options
    (each takes `device`; see `DETECTORS.options(name)`); unknown names or options raise
    ConfigError."""
    return DETECTORS.create(name, **options)
