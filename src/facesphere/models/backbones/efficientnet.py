"""EfficientNet-B0..B3 for faces, all derived from one B0 table by compound scaling.

For a coefficient phi, depth is scaled by alpha^phi, width by beta^phi and resolution by
gamma^phi (Tan and Le, 2019; alpha=1.2, beta=1.1, gamma=1.15). Here the base resolution is
112 (face crops), channel widths are rounded to multiples of 8 and stage repeats are rounded
up. Blocks are MBConv: 1x1 expansion, depthwise conv, squeeze-and-excitation, linear 1x1
projection, with SiLU (swish) activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from facesphere.models.backbones._common import (
    ConvBNAct,
    DropPath,
    EmbeddingNeck,
    FaceBackbone,
    as_size,
    downsampled,
    init_conv_linear,
)
from facesphere.models.backbones._registry import register_backbone

ALPHA = 1.2
BETA = 1.1
GAMMA = 1.15
BASE_RESOLUTION = 112
CHANNEL_DIVISOR = 8
B0_STEM = 32
B0_HEAD = 1280
# (expansion, kernel, first stride, output channels, repeats) for the seven B0 stages.
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def round_channels(channels: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round to the nearest multiple of ``divisor`` (ties up), never dropping more than 10%."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class EfficientNetScaling:
    """Scaled B0 dimensions: ``widths`` = (stem, 7 stages, head), ``depths`` = 7 repeats."""

    phi: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    resolution: int


def efficientnet_scaling(phi: int) -> EfficientNetScaling:
    """Widths, depths and input resolution of EfficientNet-B{phi} for 112x112 faces."""
    if phi < 0:
        raise ValueError(f"phi must be >= 0, got {phi}")
    width_mult = BETA**phi
    depth_mult = ALPHA**phi
    base_widths = (B0_STEM, *(stage[3] for stage in B0_STAGES), B0_HEAD)
    widths = tuple(round_channels(w * width_mult) for w in base_widths)
    depths = tuple(math.ceil(stage[4] * depth_mult) for stage in B0_STAGES)
    # Resolution to the nearest multiple of 8 (ties up).
    resolution = max(8, int(BASE_RESOLUTION * GAMMA**phi / 8 + 0.5) * 8)
    return EfficientNetScaling(phi, widths, depths, resolution)


class SqueezeExcite(nn.Module):
    """Channel gating: global average pool, reduce, SiLU, expand, sigmoid, multiply."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = nn.SiLU(inplace=True)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = torch.sigmoid(self.expand(self.act(self.reduce(scale))))
        return x * scale


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (SE ratio 0.25 of the input)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expansion: int,
        drop_path_rate: float = 0.0,
        se_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act="silu"))
        layers.append(ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act="silu"))
        layers.append(SqueezeExcite(hidden, max(1, int(in_channels * se_ratio))))
        layers.append(ConvBNAct(hidden, out_channels, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + self.drop_path(out) if self.use_residual else out


class EfficientNet(FaceBackbone):
    """EfficientNet-B{phi}; the default input size is the scaled resolution."""

    def __init__(
        self,
        phi: int = 0,
        embedding_dim: int = 512,
        input_size: int | tuple[int, int] | None = None,
        dropout: float = 0.0,
        drop_path_rate: float = 0.2,
        global_pool: bool = False,
    ) -> None:
        super().__init__()
        self.scaling = efficientnet_scaling(phi)
        self.embedding_dim = embedding_dim
        res = self.scaling.resolution
        self.input_size = as_size(res if input_size is None else input_size)
        widths = self.scaling.widths
        self.stem = ConvBNAct(3, widths[0], 3, 2, act="silu")
        total_blocks = sum(self.scaling.depths)
        blocks: list[nn.Module] = []
        in_channels = widths[0]
        for (expansion, kernel, stride, _, _), out_channels, repeats in zip(
            B0_STAGES, widths[1:-1], self.scaling.depths, strict=True
        ):
            for i in range(repeats):
                rate = drop_path_rate * len(blocks) / total_blocks
                blocks.append(
                    MBConv(
                        in_channels,
                        out_channels,
                        kernel,
                        stride if i == 0 else 1,
                        expansion,
                        drop_path_rate=rate,
                    )
                )
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(in_channels, widths[-1], 1, act="silu")
        feature_size = (downsampled(self.input_size[1], 5), downsampled(self.input_size[0], 5))
        self.neck = EmbeddingNeck(widths[-1], feature_size, embedding_dim, dropout, global_pool)
        self.apply(init_conv_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_backbone("efficientnet_b0", forwards_to=EfficientNet)
def efficientnet_b0(embedding_dim: int = 512, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B0 (phi=0), 112x112 input."""
    return EfficientNet(0, embedding_dim=embedding_dim, **kwargs)


@register_backbone("efficientnet_b1", forwards_to=EfficientNet)
def efficientnet_b1(embedding_dim: int = 512, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B1 (phi=1), scaled from B0."""
    return EfficientNet(1, embedding_dim=embedding_dim, **kwargs)


@register_backbone("efficientnet_b2", forwards_to=EfficientNet)
def efficientnet_b2(embedding_dim: int = 512, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B2 (phi=2), scaled from B0."""
    return EfficientNet(2, embedding_dim=embedding_dim, **kwargs)


@register_backbone("efficientnet_b3", forwards_to=EfficientNet)
def efficientnet_b3(embedding_dim: int = 512, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B3 (phi=3), scaled from B0."""
    return EfficientNet(3, embedding_dim=embedding_dim, **kwargs)
