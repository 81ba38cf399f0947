"""Shared helpers that turn layers read from dlib files into torch weights and modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesphere.pretrained.dlib_format import DlibFormatError, DlibNetwork, Layer

M = TypeVar("M", bound=nn.Module)


class LayerCursor:
    """Walks a network's layers (innermost first), checking each one's kind."""

    def __init__(self, net: DlibNetwork) -> None:
        self.net = net
        self.i = 0

    def take(self, kind: str) -> Layer:
        """The next layer, which must be of `kind`."""
        if self.i >= len(self.net.layers):
            raise DlibFormatError(f"{self.net.path}: expected a {kind} layer, found the end")
        layer = self.net.layers[self.i]
        if layer.kind != kind:
            raise DlibFormatError(
                f"{self.net.path}: layer {self.i} is {layer.kind}, expected {kind} "
                "(not the network this model class rebuilds)"
            )
        self.i += 1
        return layer

    def done(self) -> None:
        """Check that every layer was used."""
        if self.i != len(self.net.layers):
            raise DlibFormatError(
                f"{self.net.path}: {len(self.net.layers) - self.i} unexpected extra layers"
            )


@dataclass(frozen=True)
class ConvSpec:
    """The shape of one 2-d convolution (with bias): the plain description a module is built
    from without any weights."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @classmethod
    def of(cls, con: Layer) -> ConvSpec:
        """The shape of a con_ layer read from a file."""
        out_ch, in_ch = con.arrays["weight"].shape[:2]
        return cls(
            in_ch, out_ch, con.options["kernel"], con.options["stride"], con.options["padding"]
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConvSpec:
        """The inverse of ``dataclasses.asdict`` (JSON turns the pairs into lists)."""
        return cls(
            int(data["in_channels"]),
            int(data["out_channels"]),
            tuple(data["kernel"]),
            tuple(data["stride"]),
            tuple(data["padding"]),
        )

    def module(self) -> nn.Conv2d:
        """A Conv2d of this shape (its weights are torch's default initialisation)."""
        return nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel,
            stride=self.stride,
            padding=self.padding,
            bias=True,
        )


def fold_conv(
    con: Layer, affine: Layer | None, expected: ConvSpec | None = None, path: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """The (weight, bias) float32 of a Conv2d equal to dlib's con_ followed by `affine` (folded
    in); with `expected`, a con_ of any other shape is refused."""
    if expected is not None and ConvSpec.of(con) != expected:
        raise DlibFormatError(
            f"{path}: convolution {ConvSpec.of(con)} where {expected} was expected "
            "(not the network this model class rebuilds)"
        )
    weight = con.arrays["weight"].astype(np.float64)
    bias = con.arrays["bias"].astype(np.float64)
    if affine is not None:
        gamma = affine.arrays["gamma"].astype(np.float64)
        beta = affine.arrays["beta"].astype(np.float64)
        if gamma.size != weight.shape[0]:
            raise DlibFormatError(
                f"affine of {gamma.size} channels after a conv of {weight.shape[0]} filters"
            )
        weight = weight * gamma[:, None, None, None]
        bias = bias * gamma + beta
    return weight.astype(np.float32), bias.astype(np.float32)


def module_from_state(build: Callable[[], M], state: Mapping[str, np.ndarray]) -> M:
    """`build()` made on the meta device (no initialisation cost) and given copies of the
    arrays of `state` as its parameters and buffers; every key must match (ValueError)."""
    with torch.device("meta"):
        module = build()
    tensors = {name: torch.tensor(array) for name, array in state.items()}
    try:
        module.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"weights do not fit {type(module).__name__}: {exc}") from None
    return module


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev_: element-wise sum where missing channels/rows/columns count as zero."""
    if a.shape == b.shape:
        return a + b
    c = max(a.shape[1], b.shape[1])
    h = max(a.shape[2], b.shape[2])
    w = max(a.shape[3], b.shape[3])

    def grow(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    return grow(a) + grow(b)
