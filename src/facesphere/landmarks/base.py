"""The interface of five-point landmark models."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from facesphere.cards import ModelCard


class Landmarker(Protocol):
    """Places landmarks of `card.landmark_scheme` in the boxes (x1, y1, x2, y2) of an image."""

    card: ModelCard

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks (N, 5, 2) for RGB uint8 `image` and boxes (N, 4), right/bottom exclusive."""
        ...
