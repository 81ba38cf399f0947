"""Small helpers detectors share: input checks, the bounded working resolution, the smallest
image that can hold a face, and dlib's box convention.

Every detector runs an image at its own resolution (`thunder`: at the scale its `min_face`
asks for) up to `max_side` (default `DEFAULT_MAX_SIDE`) pixels on its longer side, and a
larger image scaled down to that (`shrink_to_max_side`), so that the cost per image is bounded
whatever its size; its faces are mapped back to the original pixels (`to_original`). An image
under `MIN_FACE_SIDE` pixels on a side has no face: every detector returns none for it without
running its network.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from facesphere.detect.base import Detection
from facesphere.errors import ConfigError

# 2048 keeps 1080p and 2K frames (and every smaller photo) at their own resolution, so small
# faces in them are kept; a 4K frame or a 12 MP phone photo is about halved, which keeps faces
# of 20 px and up above YuNet's ~10 px floor. The detectors' CPU time at 2048 x 2048 is 1-2 s.
DEFAULT_MAX_SIDE = 2048

# No detector here reports a real face under about 8 px: YuNet finds none at 8 px box width,
# and thunder (when it still enlarged small images to a 320 px input) none under ~6 px (LFW photos
# shrunk onto a canvas), while on random noise of a few pixels it finds "faces" of 1-5 px.
# An image narrower or lower than this holds no face.
MIN_FACE_SIDE = 8


def rgb_image(image: np.ndarray) -> np.ndarray:
    """`image` as (H, W, 3): greyscale repeated, alpha dropped; anything else is refused."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return image[:, :, :3]


def too_small_for_a_face(image: np.ndarray) -> bool:
    """Whether `image` (H, W, ...) is under `MIN_FACE_SIDE` pixels on a side."""
    return min(image.shape[:2]) < MIN_FACE_SIDE


def from_inclusive(left: float, top: float, right: float, bottom: float) -> np.ndarray:
    """dlib rectangles include their right/bottom pixel; facesphere boxes end one past it."""
    return np.array([left, top, right + 1, bottom + 1], np.float32)


def dlib_box(rect: Any) -> np.ndarray:
    """A dlib rectangle as a facesphere box."""
    return from_inclusive(rect.left(), rect.top(), rect.right(), rect.bottom())


def check_max_side(max_side: int) -> None:
    """ConfigError unless `max_side` is a number of pixels, or 0 (no limit)."""
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 0:
        raise ConfigError("max_side must be a whole number of pixels >= 0 (0: no limit)")


def check_detector_options(score_threshold: float, nms_iou: float, max_side: int) -> None:
    """ConfigError unless both thresholds lie in 0..1 and `max_side` passes `check_max_side`."""
    if not 0.0 <= score_threshold <= 1.0 or not 0.0 <= nms_iou <= 1.0:
        raise ConfigError("score_threshold and nms_iou must lie in 0..1")
    check_max_side(max_side)


def shrink_to_max_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """`image` as RGB uint8 (H, W, 3), scaled down (area interpolation) so that its longer side
    is at most `max_side` pixels (0: never scaled), and the scale applied to x and y."""
    image = np.ascontiguousarray(rgb_image(image), dtype=np.uint8)
    height, width = image.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return image, np.ones(2, np.float32)
    factor = max_side / max(height, width)
    size = (max(round(width * factor), 1), max(round(height * factor), 1))
    shrunk = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return shrunk, np.array([size[0] / width, size[1] / height], np.float32)


def bgr_at_max_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """`shrink_to_max_side` of `image` as float32 BGR pixels 0..255, and its scale."""
    pixels, scale = shrink_to_max_side(image, max_side)
    return pixels[:, :, ::-1].astype(np.float32), scale


def to_original(detections: list[Detection], scale: np.ndarray) -> list[Detection]:
    """`detections` found on an image scaled by `scale` (x, y), in the original's pixels."""
    if np.all(scale == 1):
        return detections
    return [
        replace(
            found,
            box=found.box / np.tile(scale, 2),
            landmarks=None if found.landmarks is None else found.landmarks / scale,
        )
        for found in detections
    ]
