"""Small helpers detectors share: the input check and dlib's box convention."""

from __future__ import annotations

import numpy as np


def rgb_image(image: np.ndarray) -> np.ndarray:
    """`image` as (H, W, 3): greyscale repeated, alpha dropped; anything else is refused."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return image[:, :, :3]


def from_inclusive(left: float, top: float, right: float, bottom: float) -> np.ndarray:
    """dlib rectangles include their right/bottom pixel; facesphere boxes end one past it."""
    return np.array([left, top, right + 1, bottom + 1], np.float32)
