"""Five-point landmark models: given face boxes, locate the points alignment needs."""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np

from facesphere.pretrained.files import dlib_model_path


class Landmarker(Protocol):
    """Predicts landmarks of `scheme` for each box (x1, y1, x2, y2) of an RGB uint8 image."""

    scheme: str

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...


class DlibShapePredictor5:
    """dlib's 5-point shape predictor (eye corners and nose base, scheme `dlib5`)."""

    scheme = "dlib5"

    def __init__(self) -> None:
        from facesphere.detect.dlib_detectors import import_dlib

        dlib = import_dlib()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(dlib_model_path("shape5")))
        self._lock = threading.Lock()

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks (N, 5, 2) for boxes (N, 4) with exclusive right/bottom edges."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.zeros((len(boxes), 5, 2), dtype=np.float32)
        with self._lock:
            for i, (x1, y1, x2, y2) in enumerate(boxes):
                rect = self._dlib.rectangle(round(x1), round(y1), round(x2) - 1, round(y2) - 1)
                shape = self._predictor(image, rect)
                out[i] = [(p.x, p.y) for p in shape.parts()]
        return out


class TorchShapePredictor5:
    """dlib's 5-point shape predictor evaluated in numpy, batched over faces (same points)."""

    scheme = "dlib5"

    def __init__(self) -> None:
        from facesphere.pretrained.dlib_shape import TorchShapePredictor

        self._predictor = TorchShapePredictor()

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks (N, 5, 2) for boxes (N, 4) with exclusive right/bottom edges."""
        boxes = np.round(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        inclusive = boxes - np.array([0.0, 0.0, 1.0, 1.0])
        return self._predictor.predict(image, inclusive).astype(np.float32)


def create_landmarker(engine: str = "torch") -> Landmarker:
    """The 5-point landmark model of `engine` (`torch` or `dlib`)."""
    if engine == "torch":
        return TorchShapePredictor5()
    if engine == "dlib":
        return DlibShapePredictor5()
    raise ValueError(f"unknown engine {engine!r}; use 'torch' or 'dlib'")
