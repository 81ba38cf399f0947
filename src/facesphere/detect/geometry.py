"""Small helpers detectors share: input checks, the working-size input of the BGR networks,
and dlib's box convention."""

from __future__ import annotations

import cv2
import numpy as np

from facesphere.errors import ConfigError


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


def check_detector_options(
    score_threshold: float, nms_iou: float, working_size: int | None
) -> None:
    """ConfigError unless both thresholds lie in 0..1 and `working_size` is None or >= 1."""
    if not 0.0 <= score_threshold <= 1.0 or not 0.0 <= nms_iou <= 1.0:
        raise ConfigError("score_threshold and nms_iou must lie in 0..1")
    if working_size is not None and working_size < 1:
        raise ConfigError("working_size must be a positive number of pixels (or None)")


def bgr_at_working_size(image: np.ndarray, working_size: int | None) -> tuple[np.ndarray, float]:
    """`image` as float32 BGR (H, W, 3) pixels 0..255, its longer side scaled to
    `working_size` when one is given (None: its own size), and the scale applied."""
    image = np.ascontiguousarray(rgb_image(image), dtype=np.uint8)
    scale = 1.0
    if working_size is not None:
        h, w = image.shape[:2]
        scale = working_size / max(h, w)
        size = (max(round(w * scale), 1), max(round(h * scale), 1))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return image[:, :, ::-1].astype(np.float32), scale
