"""Recognizers loaded from files written by `facesphere export` (ONNX or TorchScript).

Every such file carries its model card as JSON (ONNX: the metadata property
``facesphere.card``; TorchScript: the extra file ``facesphere_card.json``); the card says how
to make the network's input and what comes out, so the file alone is a recognizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesphere.cards import ModelCard
from facesphere.errors import ModelError, ModelFileError
from facesphere.recognize.base import check_chip_arrays, l2_normalize, normalize_chips

ONNX_CARD_KEY = "facesphere.card"
TORCHSCRIPT_CARD_FILE = "facesphere_card.json"


def read_card(path: str | Path) -> ModelCard:
    """The model card inside an exported ONNX or TorchScript file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no exported model at {path}")
    if path.suffix.lower() == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises several types for a file that is not ONNX
            raise ModelError(f"{path} is not an ONNX model: {exc}") from None
        text = next((p.value for p in proto.metadata_props if p.key == ONNX_CARD_KEY), None)
    else:
        import torch

        extra = {TORCHSCRIPT_CARD_FILE: ""}
        try:
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as exc:
            raise ModelError(f"{path} is not a TorchScript model: {exc}") from None
        text = extra[TORCHSCRIPT_CARD_FILE] or None
    if not text:
        raise ModelError(f"{path} carries no facesphere model card (not written by facesphere)")
    return ModelCard.from_json(text)


class ExportedRecognizer:
    """A recognizer backed by an exported file: ``.onnx`` through onnxruntime (CPU), else
    TorchScript (on `device`)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.path = Path(path)
        self.card = read_card(self.path)
        if self.card.task != "recognition":
            raise ModelError(f"{self.path} holds a {self.card.task} model, not a recognizer")
        if self.path.suffix.lower() == ".onnx":
            if device != "cpu":
                raise ModelError("exported ONNX recognizers run on the CPU; use a TorchScript file")
            import onnxruntime

            self._session = onnxruntime.InferenceSession(
                str(self.path), providers=["CPUExecutionProvider"]
            )
            self._inputs = [i.name for i in self._session.get_inputs()]
        else:
            import torch

            self._session = None
            self._device = torch.device(device)
            self._module = torch.jit.load(str(self.path), map_location=self._device).eval()

    def embed_chips(self, *chips: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of aligned RGB uint8 chips (N, H, W, 3): one
        array per template of the card (one per member of a fused model)."""
        checked = check_chip_arrays(self.card, chips)
        cards = [m.card for m in self.card.members] or [self.card]
        if len(checked[0]) == 0:
            return np.zeros((0, self.card.embedding_dim or 0), np.float32)
        inputs = [normalize_chips(c, card) for c, card in zip(checked, cards)]
        if self._session is not None:
            out = self._session.run(None, dict(zip(self._inputs, inputs)))[0]
        else:
            import torch

            tensors = [torch.from_numpy(x).to(self._device) for x in inputs]
            with torch.no_grad():
                out = self._module(*tensors).float().cpu().numpy()
        if self.card.members:
            return out.astype(np.float32)  # fused: unit length by construction
        return l2_normalize(out)
