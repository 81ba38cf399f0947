"""Pretrained face recognizers: map aligned face chips to embeddings."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from facesphere.align.templates import DLIB_150, AlignmentTemplate
from facesphere.pretrained.files import dlib_model_path


class Recognizer(Protocol):
    """Embeds aligned uint8 RGB chips (N, H, W, 3) into L2-normalised vectors (N, D)."""

    name: str
    template: AlignmentTemplate
    embedding_dim: int

    def embed_chips(self, chips: np.ndarray) -> np.ndarray: ...


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of `vectors` scaled to unit length."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


class DlibResNetRecognizer:
    """dlib's 128-d ResNet (99.38% on LFW as published), run through dlib itself."""

    name = "dlib-resnet"
    template = DLIB_150
    embedding_dim = 128

    def __init__(self) -> None:
        from facesphere.detect.dlib_detectors import import_dlib

        self._model = import_dlib().face_recognition_model_v1(str(dlib_model_path("resnet")))
        self._lock = threading.Lock()

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips, dtype=np.uint8)
        if chips.ndim != 4 or chips.shape[1:] != (150, 150, 3):
            raise ValueError(f"expected chips of shape (N, 150, 150, 3), got {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        with self._lock:
            vectors = self._model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return l2_normalize(np.array([np.asarray(v) for v in vectors]))


RECOGNIZERS = ("dlib-resnet",)
EXPORTED_SUFFIXES = (".onnx", ".pt", ".ts")


def create_recognizer(
    name: str = "dlib-resnet", engine: str = "torch", device: str = "cpu"
) -> Recognizer:
    """Build a pretrained recognizer by name, on the `torch` (default) or `dlib` engine.

    `name` may also be the path of a model written by ``facesphere export`` (``.onnx``, or
    ``.pt``/``.ts`` TorchScript); it then runs through onnxruntime or TorchScript on the CPU.
    """
    if Path(name).suffix.lower() in EXPORTED_SUFFIXES:
        from facesphere.train.export import ExportedRecognizer

        return ExportedRecognizer(name)
    if name != "dlib-resnet":
        raise KeyError(f"unknown recognizer {name!r}; known: {', '.join(RECOGNIZERS)}")
    if engine == "torch":
        from facesphere.pretrained.dlib_resnet import TorchDlibRecognizer

        return TorchDlibRecognizer(device=device)
    if engine == "dlib":
        return DlibResNetRecognizer()
    raise ValueError(f"unknown engine {engine!r}; use 'torch' or 'dlib'")
