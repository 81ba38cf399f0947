"""What a face detector returns, and the interface detectors implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facesphere.cards import ModelCard


@dataclass
class Detection:
    """A face box (x1, y1, x2, y2) in pixels (right/bottom exclusive), the detector's score,
    and, from detectors that place them, five landmarks (5, 2) in `landmark_scheme`."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None
    landmark_scheme: str | None = None


class FaceDetector(Protocol):
    """Finds faces in an RGB uint8 image, best score first."""

    card: ModelCard

    def detect(self, image: np.ndarray) -> list[Detection]: ...
