"""The detectors built on dlib's pretrained models: HOG + linear SVM, and the MMOD CNN."""

from __future__ import annotations

import threading

import numpy as np

from facesphere.detect.base import Detection
from facesphere.detect.registry import register_detector
from facesphere.pretrained.files import dlib_model_path


def import_dlib():
    """Import dlib, with an install hint when it is missing."""
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(
            "this part of facesphere runs on dlib, which is not installed: pip install dlib-bin"
        ) from exc
    return dlib


def _from_inclusive(left: float, top: float, right: float, bottom: float) -> np.ndarray:
    """dlib rectangles include their right/bottom pixel; facesphere boxes end one past it."""
    return np.array([left, top, right + 1, bottom + 1], np.float32)


class DlibHogDetector:
    """dlib's HOG frontal face detector: fast on a CPU, frontal faces of about 80 px and up
    (40 px with one upsampling). Needs dlib whatever the engine."""

    name = "hog"

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        self.upsample = upsample
        self.threshold = threshold
        self._detector = import_dlib().get_frontal_face_detector()
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        with self._lock:
            rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
        found = [
            Detection(_from_inclusive(r.left(), r.top(), r.right(), r.bottom()), float(s))
            for r, s in zip(rects, scores)
        ]
        return sorted(found, key=lambda d: -d.score)


class DlibCnnDetector:
    """dlib's MMOD CNN face detector run by dlib itself (slow on a CPU; the reference)."""

    name = "cnn"

    def __init__(self, upsample: int = 0) -> None:
        self.upsample = upsample
        self._detector = import_dlib().cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        with self._lock:
            found = self._detector(image, self.upsample)
        detections = [
            Detection(
                _from_inclusive(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()),
                float(d.confidence),
            )
            for d in found
        ]
        return sorted(detections, key=lambda d: -d.score)


class TorchMMODFaceDetector:
    """The MMOD CNN detector rebuilt in torch (same faces as dlib's, several times faster)."""

    name = "cnn"

    def __init__(self, upsample: int = 0, device: str = "cpu") -> None:
        from facesphere.pretrained.dlib_mmod import TorchMMODDetector

        self._detector = TorchMMODDetector(device=device, upsample=upsample)

    def detect(self, image: np.ndarray) -> list[Detection]:
        return [
            Detection(_from_inclusive(*box), score) for box, score in self._detector.detect(image)
        ]


@register_detector("hog")
def hog_detector(upsample: int = 1, **_: object) -> DlibHogDetector:
    """HOG frontal detector (dlib's own implementation, whatever the engine)."""
    return DlibHogDetector(upsample=upsample)


@register_detector("cnn")
def cnn_detector(
    engine: str = "torch", upsample: int = 0, device: str = "cpu", **_: object
) -> DlibCnnDetector | TorchMMODFaceDetector:
    """MMOD CNN detector on the torch engine (default) or on dlib."""
    if engine == "torch":
        return TorchMMODFaceDetector(upsample=upsample, device=device)
    if engine == "dlib":
        return DlibCnnDetector(upsample=upsample)
    raise ValueError(f"unknown engine {engine!r}; use 'torch' or 'dlib'")
