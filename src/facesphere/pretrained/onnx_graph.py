"""Run an ONNX graph as a torch module (OpenCV Zoo's YuNet and SFace, RetinaFace).

`load_onnx_graph` reads the file with the `onnx` package and evaluates, once, every node whose
inputs are all constants: the int8 block-quantized weights (DequantizeLinear with `axis` and
`block_size`: value = (q - zero_point) * scale, each scale repeated over its block along
`axis`), the Reshapes of those weights and Constant nodes. What remains runs with torch ops on
float32 buffers, so the module moves to CUDA with `.to()` and takes any batch size.

Exporters bake a batch of one into the Reshapes of activations (``[1, -1, 4]``); here the
first entry of such a shape keeps the input's batch dimension, and every other size is
computed from the actual tensor, so a fully convolutional graph takes any H and W. Graphs
exported with dynamic axes (RetinaFace) compute their Reshape and Resize sizes from the
activations (Shape, Gather, Unsqueeze, Slice, Cast, Concat); those nodes run at every call, on
the input's device. Only the ops these graphs use are implemented; any other op is a ModelError
when the file is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from os import PathLike
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from torch import Tensor, nn

from facesphere.errors import ModelError

Attributes = dict[str, Any]


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor | None, attrs: Attributes) -> Tensor:
    """ONNX DequantizeLinear: per tensor (scalar scale), per axis (1-D scale) or per block
    (scale of the input's rank, one value per `block_size` elements along `axis`)."""
    axis = int(attrs.get("axis", 1)) % max(q.dim(), 1)
    block = int(attrs.get("block_size", 0))
    zero = torch.zeros_like(scale) if zero_point is None else zero_point.to(torch.float32)
    scale = scale.to(torch.float32)
    if scale.dim() > 0 and block > 0:
        scale = scale.repeat_interleave(block, dim=axis).narrow(axis, 0, q.shape[axis])
        zero = zero.repeat_interleave(block, dim=axis).narrow(axis, 0, q.shape[axis])
    elif scale.dim() == 1 and q.dim() > 1:
        view = [1] * q.dim()
        view[axis] = -1
        scale, zero = scale.view(view), zero.view(view)
    return (q.to(torch.float32) - zero) * scale


def _reshape(x: Tensor, shape: Tensor, attrs: Attributes, constant: bool) -> Tensor:
    """ONNX Reshape (0 copies the input's size, -1 is inferred); on activations the first
    entry keeps the batch dimension (see the module docstring)."""
    target = [int(v) for v in shape.tolist()]
    if not attrs.get("allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    if not constant:
        if target[0] not in (1, x.shape[0]):
            raise ModelError(f"Reshape to {target} would mix the samples of a batch")
        target[0] = x.shape[0]
    return x.reshape(target)


def _pads(attrs: Attributes, spatial: int) -> tuple[int, ...]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelError(f"auto_pad {attrs['auto_pad']!r} is not supported")
    return tuple(int(p) for p in attrs.get("pads", [0] * (2 * spatial)))


def _padded(x: Tensor, pads: tuple[int, ...], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """`x` padded by ONNX `pads` (begins, then ends) when they are asymmetric, and the
    symmetric padding left for the torch op."""
    half = len(pads) // 2
    begins, ends = pads[:half], pads[half:]
    if begins == ends:
        return x, list(begins)
    flat: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        flat += [b, e]
    return F.pad(x, flat, value=value), [0] * half


def _conv(x: Tensor, w: Tensor, b: Tensor | None, attrs: Attributes) -> Tensor:
    if w.dim() != 4:
        raise ModelError("only 2-D Conv is supported")
    x, padding = _padded(x, _pads(attrs, 2))
    return F.conv2d(
        x,
        w,
        b,
        stride=tuple(attrs.get("strides", [1, 1])),
        padding=tuple(padding),
        dilation=tuple(attrs.get("dilations", [1, 1])),
        groups=int(attrs.get("group", 1)),
    )


def _max_pool(x: Tensor, attrs: Attributes) -> Tensor:
    if attrs.get("storage_order", 0) or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise ModelError("MaxPool with storage_order or dilations is not supported")
    x, padding = _padded(x, _pads(attrs, 2), value=-math.inf)
    kernel = tuple(attrs["kernel_shape"])
    return F.max_pool2d(
        x,
        kernel,
        stride=tuple(attrs.get("strides", kernel)),
        padding=tuple(padding),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )


def _resize(x: Tensor, scales: Tensor | None, sizes: Tensor | None, attrs: Attributes) -> Tensor:
    """Nearest-neighbour Resize of the spatial axes, by scales or to sizes, with asymmetric
    coordinates and floor rounding (what PyTorch's `nearest` mode computes)."""
    mode = (attrs.get("mode", b"nearest"), attrs.get("coordinate_transformation_mode"))
    rounding = attrs.get("nearest_mode", b"round_prefer_floor")
    if mode != (b"nearest", b"asymmetric") or rounding != b"floor":
        raise ModelError(f"Resize {mode}/{rounding!r} is not supported")
    if sizes is not None and sizes.numel():
        if sizes.numel() != x.dim() or sizes.tolist()[:2] != list(x.shape[:2]):
            raise ModelError("Resize must keep the batch and channel axes")
        return F.interpolate(x, size=[int(s) for s in sizes.tolist()[2:]], mode="nearest")
    if scales is None or scales.numel() != x.dim():
        raise ModelError("Resize needs scales or sizes for every axis")
    if scales.tolist()[:2] != [1.0, 1.0]:
        raise ModelError("Resize must keep the batch and channel axes")
    factors = [float(s) for s in scales.tolist()[2:]]
    return F.interpolate(x, scale_factor=factors, mode="nearest")


def _batch_norm(x: Tensor, inputs: list[Tensor | None], attrs: Attributes) -> Tensor:
    scale, bias, mean, var = inputs[1:5]
    eps = float(attrs.get("epsilon", 1e-5))
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)


def _prelu(x: Tensor, slope: Tensor) -> Tensor:
    if (
        x.dim() > 1
        and slope.numel() in (1, x.shape[1])
        and slope.shape[-(x.dim() - 2) :]
        in (
            (1,) * (x.dim() - 2),
            (),
        )
    ):  # one slope per channel (or one for all): torch's fused form
        return F.prelu(x, slope.reshape(-1))
    return torch.where(x >= 0, x, x * slope)


def _gemm(a: Tensor, b: Tensor, c: Tensor | None, attrs: Attributes) -> Tensor:
    a = a.transpose(0, 1) if attrs.get("transA", 0) else a
    b = b.transpose(0, 1) if attrs.get("transB", 0) else b
    out = float(attrs.get("alpha", 1.0)) * (a @ b)
    return out if c is None else out + float(attrs.get("beta", 1.0)) * c


def _flatten(x: Tensor, attrs: Attributes) -> Tensor:
    axis = int(attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _slice(x: Tensor, inputs: list[Tensor | None]) -> Tensor:
    """ONNX Slice (opset 10+: starts, ends, optional axes and steps as inputs)."""
    starts, ends = inputs[1].tolist(), inputs[2].tolist()
    axes = inputs[3].tolist() if _at(inputs, 3) is not None else list(range(len(starts)))
    steps = inputs[4].tolist() if _at(inputs, 4) is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step != 1:
            raise ModelError("only Slice with step 1 is supported")
        size = x.shape[axis]
        index[axis] = slice(
            max(start + size, 0) if start < 0 else min(start, size),
            max(end + size, 0) if end < 0 else min(end, size),
        )
    return x[tuple(index)]


def _gather(x: Tensor, indices: Tensor, attrs: Attributes) -> Tensor:
    """ONNX Gather: `x` indexed along `axis` by `indices` (negative ones count from the end)."""
    axis = int(attrs.get("axis", 0)) % x.dim()
    flat = indices.flatten().to(torch.int64) % x.shape[axis]
    picked = torch.index_select(x, axis, flat)
    return picked.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))


def _unsqueeze(x: Tensor, attrs: Attributes) -> Tensor:
    """ONNX Unsqueeze with its `axes` attribute (opset 1-12)."""
    if "axes" not in attrs:
        raise ModelError("only Unsqueeze with an `axes` attribute is supported")
    rank = x.dim() + len(attrs["axes"])
    for axis in sorted(int(v) % rank for v in attrs["axes"]):
        x = x.unsqueeze(axis)
    return x


def _softmax(x: Tensor, attrs: Attributes) -> Tensor:
    """Softmax over the last axis (where the opset 1-12 and 13+ definitions agree)."""
    if int(attrs.get("axis", -1)) % x.dim() != x.dim() - 1:
        raise ModelError("only Softmax over the last axis is supported")
    return torch.softmax(x, dim=-1)


def _cast(x: Tensor, attrs: Attributes) -> Tensor:
    dtype = CAST_TYPES.get(int(attrs["to"]))
    if dtype is None:
        raise ModelError(f"Cast to ONNX type {attrs['to']} is not supported")
    return x.to(dtype)


CAST_TYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
}


# op type -> its torch form, called with (inputs, attributes, whether all inputs are constant)
Op = Callable[[list[Tensor | None], Attributes, bool], Tensor]
OPS: dict[str, Op] = {
    "DequantizeLinear": lambda i, a, c: dequantize(i[0], i[1], _at(i, 2), a),
    "Reshape": lambda i, a, c: _reshape(i[0], i[1], a, c),
    "Conv": lambda i, a, c: _conv(i[0], i[1], _at(i, 2), a),
    "Relu": lambda i, a, c: torch.relu(i[0]),
    "Sigmoid": lambda i, a, c: torch.sigmoid(i[0]),
    "MaxPool": lambda i, a, c: _max_pool(i[0], a),
    "Resize": lambda i, a, c: _resize(i[0], _at(i, 2), _at(i, 3), a),
    "Add": lambda i, a, c: i[0] + i[1],
    "Sub": lambda i, a, c: i[0] - i[1],
    "Mul": lambda i, a, c: i[0] * i[1],
    "Transpose": lambda i, a, c: i[0].permute(*a.get("perm", range(i[0].dim() - 1, -1, -1))),
    "BatchNormalization": lambda i, a, c: _batch_norm(i[0], i, a),
    "PRelu": lambda i, a, c: _prelu(i[0], i[1]),
    "Dropout": lambda i, a, c: i[0],  # inference: identity
    "Flatten": lambda i, a, c: _flatten(i[0], a),
    "Gemm": lambda i, a, c: _gemm(i[0], i[1], _at(i, 2), a),
    "Constant": lambda i, a, c: a["value"],
    "LeakyRelu": lambda i, a, c: F.leaky_relu(i[0], float(a.get("alpha", 0.01))),
    "Identity": lambda i, a, c: i[0],
    "Softmax": lambda i, a, c: _softmax(i[0], a),
    "Concat": lambda i, a, c: torch.cat(i, dim=int(a["axis"])),
    # shape arithmetic (sizes computed from the activations, for Reshape and Resize)
    "Shape": lambda i, a, c: torch.tensor(i[0].shape, dtype=torch.int64, device=i[0].device),
    "Gather": lambda i, a, c: _gather(i[0], i[1], a),
    "Unsqueeze": lambda i, a, c: _unsqueeze(i[0], a),
    "Slice": lambda i, a, c: _slice(i[0], i),
    "Cast": lambda i, a, c: _cast(i[0], a),
}


def _at(inputs: list[Tensor | None], index: int) -> Tensor | None:
    return inputs[index] if index < len(inputs) else None


def _attributes(node: onnx.NodeProto) -> Attributes:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if "value" in attrs and isinstance(attrs["value"], onnx.TensorProto):
        attrs["value"] = torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
    if node.op_type == "Constant" and set(attrs) != {"value"}:
        raise ModelError("only Constant nodes with a tensor `value` are supported")
    return attrs


def _tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(array, copy=True))


class OnnxGraph(nn.Module):
    """An ONNX graph run with torch ops; `forward(x)` returns {output name: tensor}."""

    def __init__(self, model: onnx.ModelProto, name: str) -> None:
        super().__init__()
        graph = model.graph
        values: dict[str, Tensor] = {
            init.name: _tensor(numpy_helper.to_array(init)) for init in graph.initializer
        }
        consumed = {i for node in graph.node for i in node.input}
        # old exporters list the weights among the inputs too; the data input is the one used
        self.input_names = [
            i.name for i in graph.input if i.name not in values and i.name in consumed
        ]
        if len(self.input_names) != 1:
            raise ModelError(f"{name}: expected one graph input, found {self.input_names}")
        self.output_names = [o.name for o in graph.output]
        unknown = sorted({n.op_type for n in graph.node if n.op_type not in OPS or n.domain})
        if unknown:
            raise ModelError(f"{name}: unsupported ONNX ops {', '.join(unknown)}")
        self.nodes: list[tuple[str, list[str], list[str], Attributes]] = []
        with torch.no_grad():
            for node in graph.node:
                attrs = _attributes(node)
                if all(not i or i in values for i in node.input):
                    inputs = [values[i] if i else None for i in node.input]
                    values[node.output[0]] = OPS[node.op_type](inputs, attrs, True)
                else:
                    self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        used = {i for _, inputs, _, _ in self.nodes for i in inputs} | set(self.output_names)
        self._buffer_of: dict[str, str] = {}
        for i, (key, value) in enumerate(sorted(v for v in values.items() if v[0] in used)):
            buffer = f"c{i}"
            value = value.float() if value.is_floating_point() else value
            self.register_buffer(buffer, value.contiguous())
            self._buffer_of[key] = buffer

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Every graph output for the input batch `x`."""
        env: dict[str, Tensor] = {k: getattr(self, b) for k, b in self._buffer_of.items()}
        env[self.input_names[0]] = x
        for op, inputs, outputs, attrs in self.nodes:
            args = [env[i] if i else None for i in inputs]
            env[outputs[0]] = OPS[op](args, attrs, False)
        return {name: env[name] for name in self.output_names}


def load_onnx_graph(path: str | PathLike) -> OnnxGraph:
    """The ONNX file at `path` as an `OnnxGraph` in eval mode (ModelError when it cannot)."""
    try:
        model = onnx.load(str(path))
    except (OSError, DecodeError) as exc:
        raise ModelError(f"cannot read the ONNX file {path}: {exc}") from None
    return OnnxGraph(model, str(path)).eval()


def onnx_graph_from_bytes(data: bytes, name: str) -> OnnxGraph:
    """The serialised ONNX model `data` (called `name` in errors) as an `OnnxGraph` in eval
    mode (ModelError when it cannot)."""
    try:
        model = onnx.load_from_string(data)
    except DecodeError as exc:
        raise ModelError(f"cannot read the ONNX model {name}: {exc}") from None
    return OnnxGraph(model, name).eval()
