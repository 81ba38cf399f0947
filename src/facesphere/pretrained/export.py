"""Export the rebuilt dlib networks to ONNX or TorchScript.

* ``dlib-resnet``: input ``chips`` float32 (N, 3, 150, 150), RGB values 0..255 (the channel
  means and 1/256 scaling are inside the graph); output ``embeddings`` (N, 128), L2-normalised.
  The batch axis is dynamic.
* ``dlib-mmod``: input ``pyramid`` float32 (N, 3, H, W), the normalised tiled image pyramid
  built by :meth:`TorchMMODDetector.tiled_pyramid`; output ``scores`` (N, 1, h, w). Batch,
  height and width are dynamic. Box decoding and NMS stay in Python.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

EXPORTABLE_MODELS = ("dlib-resnet", "dlib-mmod")
EXPORT_FORMATS = ("onnx", "torchscript")


def build_model(
    name: str,
) -> tuple[nn.Module, torch.Tensor, dict[str, dict[int, str]], list[str], list[str]]:
    """The module, an example input, dynamic axes and input/output names for `name`."""
    if name == "dlib-resnet":
        from facesphere.pretrained.dlib_resnet import load_dlib_resnet

        model = load_dlib_resnet()
        example = torch.rand(2, 3, 150, 150) * 255
        axes = {"chips": {0: "batch"}, "embeddings": {0: "batch"}}
        return model, example, axes, ["chips"], ["embeddings"]
    if name == "dlib-mmod":
        from facesphere.pretrained.dlib_mmod import TorchMMODDetector

        model = TorchMMODDetector().model.to(memory_format=torch.contiguous_format)
        example = torch.rand(1, 3, 200, 160) - 0.5
        axes = {
            "pyramid": {0: "batch", 2: "height", 3: "width"},
            "scores": {0: "batch", 2: "out_height", 3: "out_width"},
        }
        return model, example, axes, ["pyramid"], ["scores"]
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(EXPORTABLE_MODELS)}")


def export_onnx(name: str, out: Path | str, opset: int = 17) -> Path:
    """Write model `name` ('dlib-resnet' or 'dlib-mmod') as ONNX to `out`."""
    model, example, axes, inputs, outputs = build_model(name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(out),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return out


def export_torchscript(name: str, out: Path | str) -> Path:
    """Write model `name` as a traced TorchScript file to `out`."""
    model, example, _axes, _inputs, _outputs = build_model(name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), (example,))
    traced.save(str(out))
    return out


def export_model(name: str, out: Path | str, fmt: str = "onnx") -> Path:
    """Export `name` in format `fmt` ('onnx' or 'torchscript')."""
    if fmt == "onnx":
        return export_onnx(name, out)
    if fmt == "torchscript":
        return export_torchscript(name, out)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
