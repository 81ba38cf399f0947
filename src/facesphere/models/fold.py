"""Batch norm folded into the convolution before it, for inference.

In eval mode a BatchNorm2d after a Conv2d is an affine map per output channel, so it can be
merged into the convolution's weights and bias: y = g * (conv(x) - m) / sqrt(v + e) + b is
conv'(x) with W' = W * s and b' = (b_conv - m) * s + b, s = g / sqrt(v + e). The folded model
computes the same outputs (to float rounding) with one layer less per pair.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def fold_pair(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Merge `norm` (in eval statistics) into `conv` in place; `norm` must then be dropped."""
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """`model` (in eval mode) with every BatchNorm2d that directly follows a Conv2d inside an
    nn.Sequential folded into it and replaced by nn.Identity (elsewhere the order in which
    children run is unknown: fold those pairs with `fold_pair`). Returns `model`; a model in
    training mode is refused (its batch norms use batch statistics)."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (_, first), (name, second) in itertools.pairwise(children):
            is_pair = isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d)
            if is_pair and second.track_running_stats and first.out_channels == second.num_features:
                fold_pair(first, second)
                setattr(parent, name, nn.Identity())
    return model
