"""Shared helpers that turn layers read from dlib files into torch modules."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facesphere.pretrained.dlib_format import DlibFormatError, DlibNetwork, Layer


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


def conv_affine(con: Layer, affine: Layer | None) -> nn.Conv2d:
    """A Conv2d with dlib's con_ weights, folding a following affine_ layer into it."""
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
    out_ch, in_ch, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_ch,
        out_ch,
        (kh, kw),
        stride=con.options["stride"],
        padding=con.options["padding"],
        bias=True,
    )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        conv.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return conv


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
