"""dlib's detectors: the HOG + linear SVM frontal detector and the MMOD CNN detector."""

from __future__ import annotations

import threading

import numpy as np

from facesphere.detect.base import Detection
from facesphere.detect.registry import register_detector
from facesphere.pretrained.files import dlib_model_path


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the dlib engine needs dlib: pip install dlib-bin") from exc
    return dlib


class DlibHogDetector:
    """dlib's HOG frontal face detector: fast on a CPU, frontal faces of about 80 px and up
    (40 px with one upsampling)."""

    name = "hog"

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        dlib = _import_dlib()
        self.upsample = upsample
        self.threshold = threshold
        self._detector = dlib.get_frontal_face_detector()
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        with self._lock:
            rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
        return [
            Detection(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32), s)
            for r, s in zip(rects, scores)
        ]


class DlibCnnDetector:
    """dlib's MMOD CNN face detector: finds turned and smaller faces, slow on a CPU."""

    name = "cnn"

    def __init__(self, upsample: int = 0) -> None:
        dlib = _import_dlib()
        self.upsample = upsample
        self._detector = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        with self._lock:
            found = self._detector(image, self.upsample)
        detections = [
            Detection(
                np.array(
                    [d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1],
                    np.float32,
                ),
                float(d.confidence),
            )
            for d in found
        ]
        return sorted(detections, key=lambda d: -d.score)


@register_detector("hog")
def hog_detector(engine: str = "dlib", upsample: int = 1, **kwargs: object) -> DlibHogDetector:
    """HOG frontal detector (dlib engine only)."""
    if engine != "dlib":
        raise ValueError(f"detector 'hog' exists only in the dlib engine, not {engine!r}")
    return DlibHogDetector(upsample=upsample)


@register_detector("cnn")
def cnn_detector(engine: str = "dlib", upsample: int = 0, **kwargs: object) -> DlibCnnDetector:
    """MMOD CNN detector."""
    if engine != "dlib":
        raise ValueError(f"detector 'cnn' has no {engine!r} engine yet")
    return DlibCnnDetector(upsample=upsample)
