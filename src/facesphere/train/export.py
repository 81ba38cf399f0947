"""Export a trained backbone to ONNX or TorchScript, with its preprocessing recorded inside.

The exported file carries ``facesphere.*`` metadata (ONNX ``metadata_props``; TorchScript
extra file ``facesphere.json``): model name, backbone, embedding size, alignment template,
input size (width, height), channel order and normalisation ``(pixel - mean) / std``.
:class:`ExportedRecognizer` reads that back and embeds aligned chips, so a FaceAnalyzer can
use an exported model as its recognizer.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facesphere.align.templates import TEMPLATES, AlignmentTemplate

EXPORT_FORMATS = ("onnx", "torchscript")
_EXTRA_FILE = "facesphere.json"


class _Normalised(nn.Module):
    """The backbone behind L2 normalisation (the exported graph outputs unit vectors)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.backbone(x), dim=1)


def load_exportable(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The eval-mode backbone of a checkpoint (folder, rank file, best.pt/model.pt) + metadata."""
    from facesphere.models.backbones import create_backbone
    from facesphere.train.trainer import load_backbone_state

    state, meta = load_backbone_state(checkpoint)
    backbone = create_backbone(
        meta["backbone"], embedding_dim=meta["embedding_dim"], **meta.get("backbone_kwargs", {})
    )
    backbone.load_state_dict(state)
    return backbone.eval(), meta


def export_metadata(meta: dict[str, Any], name: str) -> dict[str, str]:
    """The string key/value metadata written into an exported file."""
    width, height = meta.get("input_size", [112, 112])
    return {
        "facesphere.name": name,
        "facesphere.backbone": str(meta["backbone"]),
        "facesphere.embedding_dim": str(meta["embedding_dim"]),
        "facesphere.template": str(meta.get("template", "standard112")),
        "facesphere.input_size": f"{width},{height}",
        "facesphere.channel_order": "RGB",
        "facesphere.layout": "NCHW",
        "facesphere.mean": str(float(meta.get("mean", 127.5))),
        "facesphere.std": str(float(meta.get("std", 127.5))),
        "facesphere.normalized_output": "1",
    }


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    name: str | None = None,
    opset: int = 17,
) -> Path:
    """Write a checkpoint's backbone as ONNX (dynamic batch axis) or TorchScript."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    backbone, meta = load_exportable(checkpoint)
    metadata = export_metadata(meta, name or out.stem)
    model = _Normalised(backbone).eval()
    width, height = meta.get("input_size", [112, 112])
    example = torch.zeros(2, 3, height, width)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        import onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(out),
                input_names=["input"],
                output_names=["embedding"],
                dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        proto = onnx.load(str(out))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(out))
    else:
        with torch.no_grad():
            scripted = torch.jit.trace(model, example)
        torch.jit.save(scripted, str(out), _extra_files={_EXTRA_FILE: json.dumps(metadata)})
    return out


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``facesphere.*`` metadata of an exported ONNX or TorchScript file."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props if p.key.startswith("facesphere.")}
    extra = {_EXTRA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[_EXTRA_FILE] or "{}")


class ExportedRecognizer:
    """A recognizer backed by an exported facesphere model (``.onnx`` via onnxruntime, else
    TorchScript); preprocessing comes from the file's metadata."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no exported model at {self.path}")
        meta = read_metadata(self.path)
        if "facesphere.template" not in meta:
            raise ValueError(f"{self.path} has no facesphere metadata (not exported by facesphere)")
        self.name: str = meta.get("facesphere.name", self.path.stem)
        template = meta["facesphere.template"]
        if template not in TEMPLATES:
            raise ValueError(f"{self.path}: unknown alignment template {template!r}")
        self.template: AlignmentTemplate = TEMPLATES[template]
        self.embedding_dim = int(meta["facesphere.embedding_dim"])
        width, height = (int(v) for v in meta["facesphere.input_size"].split(","))
        self.input_size = (width, height)
        self.mean = float(meta["facesphere.mean"])
        self.std = float(meta["facesphere.std"])
        if self.path.suffix.lower() == ".onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            self._session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
            self._input = self._session.get_inputs()[0].name
            self._module = None
        else:
            self._session = None
            self._module = torch.jit.load(str(self.path), map_location="cpu").eval()

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of aligned RGB uint8 chips (N, H, W, 3)."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        width, height = self.input_size
        if chips.ndim != 4 or chips.shape[1:] != (height, width, 3):
            raise ValueError(
                f"expected chips of shape (N, {height}, {width}, 3), got {chips.shape}"
            )
        if len(chips) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        x = ((chips.astype(np.float32) - self.mean) / self.std).transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        if self._session is not None:
            out = self._session.run(None, {self._input: x})[0]
        else:
            assert self._module is not None
            with torch.no_grad():
                out = self._module(torch.from_numpy(x)).numpy()
        out = np.asarray(out, dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
