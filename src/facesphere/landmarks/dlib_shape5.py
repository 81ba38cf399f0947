"""`dlib-shape5`: dlib's 5-point shape predictor (eye corners and nose base, scheme `dlib5`).

The `torch` engine is facesphere's own port of the regression-tree cascade (numpy, batched
over faces; `facesphere.pretrained.dlib_shape`), identical to dlib on our tests; the `dlib`
engine runs dlib itself.
"""

from __future__ import annotations

import threading

import numpy as np

from facesphere.landmarks.registry import register_landmarker
from facesphere.pretrained.cards import DLIB_SHAPE5
from facesphere.pretrained.dlib_library import check_engine, import_dlib
from facesphere.pretrained.dlib_shape import load_dlib_shape5
from facesphere.pretrained.files import card_file


class ShapePredictor5:
    """dlib's 5-point landmarks for face boxes, on the `torch` (own port) or `dlib` engine."""

    card = DLIB_SHAPE5

    def __init__(self, engine: str = "torch", device: str = "cpu") -> None:
        check_engine(engine, device)
        self.engine = engine
        if engine == "dlib":
            self._dlib = import_dlib()
            self._predictor = self._dlib.shape_predictor(str(card_file(self.card)))
            self._lock = threading.Lock()
        else:
            self._cascade = load_dlib_shape5()

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks (N, 5, 2) float32 for boxes (N, 4) with exclusive right/bottom edges."""
        boxes = np.round(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        if self.engine == "torch":
            inclusive = boxes - np.array([0.0, 0.0, 1.0, 1.0])
            return self._cascade.predict(image, inclusive).astype(np.float32)
        out = np.zeros((len(boxes), 5, 2), dtype=np.float32)
        with self._lock:
            for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
                shape = self._predictor(image, self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1))
                out[i] = [(p.x, p.y) for p in shape.parts()]
        return out


@register_landmarker("dlib-shape5", card=DLIB_SHAPE5)
def dlib_shape5(engine: str = "torch", device: str = "cpu") -> ShapePredictor5:
    """dlib's 5-point shape predictor (`engine` torch or dlib; CPU only)."""
    return ShapePredictor5(engine, device)
