"""One exporter: trained checkpoints and bundled pretrained models to ONNX or TorchScript.

Every file written carries the model's card (`facesphere.recognize.exported`), so that a
recognizer file loads with ``FaceAnalyzer(recognizer=PATH)`` and gives the embeddings of the
model it came from. Inputs are NCHW float32 made as the card says ((pixel - mean) / std, RGB);
recognizers output L2-normalised embeddings; the batch axis is dynamic.

Bundled models: ``dlib-resnet`` (input (N, 3, 150, 150), raw 0..255 RGB: the network
subtracts dlib's channel means itself), ``sface`` (input (N, 3, 112, 112), raw 0..255 RGB: the
graph normalises itself), the fused ``dlib-resnet+sface`` (one input per member, in the card's
order, named after the member's template; output the fused unit embedding) and ``dlib-mmod``
(input ``pyramid``, the tiled image pyramid of `MMODDetector.tiled_pyramid`, output
``scores``; box decoding stays in Python).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from facesphere.cards import ModelCard
from facesphere.errors import ConfigError
from facesphere.recognize.exported import ONNX_CARD_KEY, TORCHSCRIPT_CARD_FILE

EXPORT_FORMATS = ("onnx", "torchscript")


@dataclass
class Exportable:
    """A module ready to trace, with an example input, axis names and its card."""

    module: nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    card: ModelCard


class _Normalised(nn.Module):
    """A backbone behind L2 normalisation (exported recognizers output unit vectors)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.backbone(x), dim=1)


class _OnnxGraphOutput(nn.Module):
    """An `OnnxGraph` as a module returning its one output tensor."""

    def __init__(self, graph: nn.Module, output: str) -> None:
        super().__init__()
        self.graph, self.output = graph, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)[self.output]


class _Fused(nn.Module):
    """Member networks (each behind L2 normalisation) fused: their unit embeddings scaled by
    the square roots of the weights and concatenated (`facesphere.recognize.fused`)."""

    def __init__(self, members: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.scales = [float(w) ** 0.5 for w in weights]

    def forward(self, *chips: torch.Tensor) -> torch.Tensor:
        parts = [s * m(x) for m, s, x in zip(self.members, self.scales, chips)]
        return torch.cat(parts, dim=1)


def _recognizer(module: nn.Module, card: ModelCard, scale: float = 1.0) -> Exportable:
    """`module` taking one chip batch per template of `card` (pixels 0..`scale` in the
    example), as an exportable recognizer."""
    cards = [m.card for m in card.members] or [card]
    inputs = ["input"] if len(cards) == 1 else [f"chips_{c.template}" for c in cards]
    example = []
    for member in cards:
        assert member.input_size is not None
        width, height = member.input_size
        example.append(torch.rand(2, 3, height, width) * scale)
    axes = {name: {0: "batch"} for name in [*inputs, "embedding"]}
    return Exportable(module.eval(), tuple(example), inputs, ["embedding"], axes, card)


def _dlib_resnet_module() -> nn.Module:
    from facesphere.pretrained.dlib_resnet import load_dlib_resnet

    return _Normalised(load_dlib_resnet())


def _sface_module() -> nn.Module:
    from facesphere.pretrained.cards import SFACE
    from facesphere.pretrained.files import card_file
    from facesphere.pretrained.onnx_graph import load_onnx_graph

    graph = load_onnx_graph(card_file(SFACE))
    return _Normalised(_OnnxGraphOutput(graph, graph.output_names[0]))


def _dlib_resnet() -> Exportable:
    from facesphere.pretrained.cards import DLIB_RESNET

    return _recognizer(_dlib_resnet_module(), DLIB_RESNET, 255.0)


def _sface() -> Exportable:
    from facesphere.pretrained.cards import SFACE

    return _recognizer(_sface_module(), SFACE, 255.0)


def _dlib_resnet_sface() -> Exportable:
    from facesphere.pretrained.cards import DLIB_RESNET_SFACE

    weights = [m.weight for m in DLIB_RESNET_SFACE.members]
    module = _Fused([_dlib_resnet_module(), _sface_module()], weights)
    return _recognizer(module, DLIB_RESNET_SFACE, 255.0)


def _dlib_mmod() -> Exportable:
    from facesphere.detect.mmod import MMODDetector

    detector = MMODDetector()
    module = detector.model.to(memory_format=torch.contiguous_format).eval()
    axes = {
        "pyramid": {0: "batch", 2: "height", 3: "width"},
        "scores": {0: "batch", 2: "out_height", 3: "out_width"},
    }
    example = (torch.rand(1, 3, 200, 160) - 0.5,)
    return Exportable(module, example, ["pyramid"], ["scores"], axes, detector.card)


BUNDLED: dict[str, Callable[[], Exportable]] = {
    "dlib-resnet": _dlib_resnet,
    "sface": _sface,
    "dlib-resnet+sface": _dlib_resnet_sface,
    "dlib-mmod": _dlib_mmod,
}


def checkpoint_exportable(checkpoint: str | Path, name: str | None = None) -> Exportable:
    """A trained backbone (checkpoint folder, rank file, best.pt or model.pt) and its card."""
    from facesphere.models.checkpoint import load_backbone

    backbone, card = load_backbone(checkpoint)
    if name:
        card = card.derive(name=name)
    return _recognizer(_Normalised(backbone), card)


def write(exportable: Exportable, out: str | Path, fmt: str = "onnx", opset: int = 17) -> Path:
    """Trace `exportable` into `out` as `fmt` ('onnx' or 'torchscript'), card included."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    card_json = exportable.card.to_json()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            traced = torch.jit.trace(exportable.module, exportable.example)
            torch.jit.save(traced, str(out), _extra_files={TORCHSCRIPT_CARD_FILE: card_json})
            return out
        torch.onnx.export(
            exportable.module,
            exportable.example,
            str(out),
            input_names=exportable.inputs,
            output_names=exportable.outputs,
            dynamic_axes=exportable.dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    import onnx

    proto = onnx.load(str(out))
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_CARD_KEY, card_json
    onnx.save(proto, str(out))
    return out


def export_model(
    source: str | Path, out: str | Path, fmt: str = "onnx", name: str | None = None
) -> Path:
    """Export a bundled model (`BUNDLED`: dlib-resnet, sface, dlib-resnet+sface, dlib-mmod) or
    a checkpoint path to `out`."""
    if str(source) in BUNDLED:
        if name:
            raise ConfigError("a bundled model keeps its own name; --name is for checkpoints")
        return write(BUNDLED[str(source)](), out, fmt)
    return write(checkpoint_exportable(source, name), out, fmt)
