"""The `hog` detector: dlib's HOG + linear SVM frontal face detector (dlib's own code)."""

from __future__ import annotations

import threading

import numpy as np

from facesphere.detect.base import Detection
from facesphere.detect.geometry import from_inclusive, rgb_image
from facesphere.detect.registry import register_detector
from facesphere.pretrained.cards import DLIB_HOG
from facesphere.pretrained.dlib_library import check_engine, import_dlib


class HogDetector:
    """Fast on a CPU; frontal faces of about 80 px and up (40 px with one upsampling)."""

    card = DLIB_HOG

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        self.upsample = upsample
        self.threshold = threshold
        self._detector = import_dlib().get_frontal_face_detector()
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in RGB uint8 `image`, best score first."""
        with self._lock:
            rects, scores, _ = self._detector.run(rgb_image(image), self.upsample, self.threshold)
        found = [
            Detection(from_inclusive(r.left(), r.top(), r.right(), r.bottom()), float(s))
            for r, s in zip(rects, scores)
        ]
        return sorted(found, key=lambda d: -d.score)


@register_detector("hog", card=DLIB_HOG)
def hog_detector(
    engine: str = "dlib", device: str = "cpu", upsample: int = 1, threshold: float = 0.0
) -> HogDetector:
    """HOG frontal detector; it exists on the dlib engine only."""
    check_engine(engine, device, ("dlib",))
    return HogDetector(upsample=upsample, threshold=threshold)
