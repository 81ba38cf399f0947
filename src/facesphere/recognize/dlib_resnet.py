"""`dlib-resnet`: dlib's 128-d face ResNet, on the torch engine (rebuilt from dlib's file,
`facesphere.pretrained.dlib_resnet`) or on dlib itself (the reference)."""

from __future__ import annotations

import threading

import numpy as np
import torch

from facesphere.pretrained.cards import DLIB_RESNET
from facesphere.pretrained.dlib_library import check_engine, import_dlib
from facesphere.pretrained.dlib_resnet import load_dlib_resnet
from facesphere.pretrained.files import card_file
from facesphere.recognize.base import check_chips, l2_normalize, normalize_chips
from facesphere.recognize.registry import register_recognizer


class DlibResNetRecognizer:
    """150x150 uint8 RGB chips (template dlib150) -> unit 128-d embeddings."""

    card = DLIB_RESNET

    def __init__(self, engine: str = "torch", device: str = "cpu", batch_size: int = 32) -> None:
        check_engine(engine, device)
        self.engine = engine
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if engine == "dlib":
            self._dlib = import_dlib().face_recognition_model_v1(str(card_file(self.card)))
            self._lock = threading.Lock()
            return
        self.device = torch.device(device)
        self.model = load_dlib_resnet().to(self.device)
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings float32 (N, 128), L2-normalised, of uint8 RGB chips (N, 150, 150, 3)."""
        chips = check_chips(chips, self.card)
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        if self.engine == "dlib":
            with self._lock:
                found = self._dlib.compute_face_descriptor(
                    [np.ascontiguousarray(c, np.uint8) for c in chips]
                )
            return l2_normalize(np.array([np.asarray(v) for v in found]))
        out = np.empty((len(chips), 128), np.float32)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = normalize_chips(chips[start : start + self.batch_size], self.card)
                x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=layout)
                out[start : start + len(batch)] = self.model(x).float().cpu().numpy()
        return out


@register_recognizer("dlib-resnet", card=DLIB_RESNET)
def dlib_resnet(
    engine: str = "torch", device: str = "cpu", batch_size: int = 32
) -> DlibResNetRecognizer:
    """dlib's ResNet recognizer (`engine` torch, the default, or dlib)."""
    return DlibResNetRecognizer(engine, device, batch_size)
