"""The landmarker registry: `register_landmarker`, `create_landmarker`, `list_landmarkers`."""

from __future__ import annotations

from typing import Any

from facesphere.landmarks.base import Landmarker
from facesphere.registry import Registry

LANDMARKERS: Registry[Landmarker] = Registry("landmarker", package="facesphere.landmarks")
register_landmarker = LANDMARKERS.register
list_landmarkers = LANDMARKERS.names


def create_landmarker(name: str = "dlib-shape5", **options: Any) -> Landmarker:
    """Build the landmarker registered as `name` (options: `engine`, `device`)."""
    return LANDMARKERS.create(name, **options)
