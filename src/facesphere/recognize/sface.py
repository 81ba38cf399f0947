"""`sface`: OpenCV Zoo's SFace (2021dec, int8), 128-d embeddings of standard112 chips.

The ONNX graph runs as a torch module (`facesphere.pretrained.onnx_graph`). It takes RGB pixels
0..255 and normalises them itself ((pixel - 127.5) / 128, the Sub and Mul at its input), so the
card's normalisation is RAW_PIXELS. OpenCV's `FaceRecognizerSF.feature` is given a BGR crop and
swaps it to RGB before the network; facesphere's chips are RGB already.
"""

from __future__ import annotations

import numpy as np
import torch

from facesphere.pretrained.cards import SFACE
from facesphere.pretrained.files import card_file
from facesphere.pretrained.onnx_graph import load_onnx_graph
from facesphere.recognize.base import check_chips, l2_normalize, normalize_chips
from facesphere.recognize.registry import register_recognizer


class SFaceRecognizer:
    """112x112 uint8 RGB chips (template standard112) -> unit 128-d embeddings."""

    card = SFACE

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.device = torch.device(device)
        self.model = load_onnx_graph(card_file(self.card)).to(self.device)
        (self.output,) = self.model.output_names

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings float32 (N, 128), L2-normalised, of uint8 RGB chips (N, 112, 112, 3)."""
        chips = check_chips(chips, self.card)
        out = np.empty((len(chips), 128), np.float32)
        with torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = normalize_chips(chips[start : start + self.batch_size], self.card)
                x = torch.from_numpy(batch).to(self.device)
                out[start : start + len(batch)] = self.model(x)[self.output].float().cpu().numpy()
        return l2_normalize(out)


@register_recognizer("sface", card=SFACE)
def sface(device: str = "cpu", batch_size: int = 64) -> SFaceRecognizer:
    """OpenCV Zoo's SFace recognizer (128-d, standard112 chips)."""
    return SFaceRecognizer(device, batch_size)
