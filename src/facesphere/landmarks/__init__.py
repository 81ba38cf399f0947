"""Five-point landmark models behind one registry: `dlib-shape5`."""

from facesphere.landmarks.base import Landmarker
from facesphere.landmarks.registry import (
    LANDMARKERS,
    create_landmarker,
    list_landmarkers,
    register_landmarker,
)

__all__ = [
    "LANDMARKERS",
    "Landmarker",
    "create_landmarker",
    "list_landmarkers",
    "register_landmarker",
]
