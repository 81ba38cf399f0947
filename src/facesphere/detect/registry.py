"""The detector registry: `register_detector`, `create_detector`, `list_detectors`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from facesphere.detect.base import FaceDetector
from facesphere.registry import Registry

DETECTORS: Registry[FaceDetector] = Registry("detector")


def register_detector(
    name: str,
) -> Callable[[Callable[..., FaceDetector]], Callable[..., FaceDetector]]:
    """Decorator registering a detector factory under `name`."""
    return DETECTORS.register(name)


def create_detector(name: str, **kwargs: Any) -> FaceDetector:
    """Build the detector registered as `name` (e.g. `hog`, `cnn`)."""
    return DETECTORS.create(name, **kwargs)


def list_detectors() -> list[str]:
    """Names of all registered detectors."""
    return DETECTORS.names()
