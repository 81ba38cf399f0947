"""The `hog` detector: dlib's HOG + linear SVM frontal face detector (dlib's own code)."""

from __future__ import annotations

import threading

import numpy as np

from facesphere.detect.base import Detection
from facesphere.detect.geometry import (
    DEFAULT_MAX_SIDE,
    check_max_side,
    dlib_box,
    shrink_to_max_side,
    to_original,
    too_small_for_a_face,
)
from facesphere.detect.registry import register_detector
from facesphere.pretrained.cards import DLIB_HOG
from facesphere.pretrained.dlib_library import check_engine, import_dlib


class HogDetector:
    """Fast on a CPU; frontal faces of about 80 px and up (40 px with one upsampling). An
    image larger than `max_side` (0: no limit) on its longer side is scaled down to it."""

    card = DLIB_HOG

    def __init__(
        self, upsample: int = 1, threshold: float = 0.0, max_side: int = DEFAULT_MAX_SIDE
    ) -> None:
        check_max_side(max_side)
        self.upsample = upsample
        self.threshold = threshold
        self.max_side = max_side
        self._detector = import_dlib().get_frontal_face_detector()
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in RGB uint8 `image`, best score first."""
        pixels, scale = shrink_to_max_side(image, self.max_side)
        if too_small_for_a_face(pixels):
            return []
        with self._lock:
            rects, scores, _ = self._detector.run(pixels, self.upsample, self.threshold)
        found = [Detection(dlib_box(r), float(s)) for r, s in zip(rects, scores)]
        return to_original(sorted(found, key=lambda d: -d.score), scale)


@register_detector("hog", card=DLIB_HOG)
def hog_detector(
    engine: str = "dlib",
    device: str = "cpu",
    upsample: int = 1,
    threshold: float = 0.0,
    max_side: int = DEFAULT_MAX_SIDE,
) -> HogDetector:
    """HOG frontal detector; it exists on the dlib engine only."""
    check_engine(engine, device, ("dlib",))
    return HogDetector(upsample=upsample, threshold=threshold, max_side=max_side)
