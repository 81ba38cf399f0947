"""What a face detector returns, and the interface detectors implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Detection:
    """A face box (x1, y1, x2, y2) in pixels and the detector's confidence score."""

    box: np.ndarray
    score: float


class FaceDetector(Protocol):
    """Finds faces in an RGB uint8 image."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]: ...
