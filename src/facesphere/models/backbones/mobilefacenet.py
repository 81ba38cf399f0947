"""MobileFaceNet (Chen et al., 2018): MobileNetV2 bottlenecks sized for 112x112 faces.

The network ends in a global depthwise convolution (GDC) whose kernel covers the whole 7x7
final map, so that each spatial position gets its own learned weight instead of the equal
weights of global average pooling, followed by a linear 1x1 convolution to the embedding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from facesphere.models.backbones._common import (
    ConvBNAct,
    FaceBackbone,
    as_size,
    downsampled,
    init_conv_linear,
)
from facesphere.models.backbones._registry import register_backbone

# (expansion t, output channels c, repeats n, first stride s), Table 1 of the paper.
MOBILEFACENET_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand - 3x3 depthwise - linear 1x1 project, PReLU activations."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.body = nn.Sequential(
            ConvBNAct(in_channels, hidden, 1, act="prelu"),
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act="prelu"),
            ConvBNAct(hidden, out_channels, 1, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


class GDCNeck(nn.Module):
    """Linear global depthwise conv over the whole map, then a linear 1x1 conv and BN."""

    def __init__(self, in_channels: int, feature_size: tuple[int, int], embedding_dim: int) -> None:
        super().__init__()
        self.gdc = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, feature_size, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
        )
        self.linear = nn.Conv2d(in_channels, embedding_dim, 1, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(self.gdc(x))
        return self.bn(torch.flatten(x, 1))


class MobileFaceNet(FaceBackbone):
    """MobileFaceNet; about 0.99M parameters with a 128-d embedding."""

    def __init__(
        self,
        embedding_dim: int = 512,
        input_size: int | tuple[int, int] = (112, 112),
        width: int = 64,
        final_channels: int = 512,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.input_size = as_size(input_size)
        self.stem = nn.Sequential(
            ConvBNAct(3, width, 3, 2, act="prelu"),
            ConvBNAct(width, width, 3, 1, groups=width, act="prelu"),
        )
        blocks: list[nn.Module] = []
        in_channels = width
        for t, c, n, s in MOBILEFACENET_SETTINGS:
            for i in range(n):
                blocks.append(Bottleneck(in_channels, c, s if i == 0 else 1, t))
                in_channels = c
        self.blocks = nn.Sequential(*blocks)
        self.conv_last = ConvBNAct(in_channels, final_channels, 1, act="prelu")
        feature_size = (downsampled(self.input_size[1], 4), downsampled(self.input_size[0], 4))
        self.neck = GDCNeck(final_channels, feature_size, embedding_dim)
        self.apply(init_conv_linear)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.blocks(self.stem(x)))


@register_backbone("mobilefacenet", forwards_to=MobileFaceNet)
def mobilefacenet(embedding_dim: int = 512, **kwargs: Any) -> MobileFaceNet:
    """MobileFaceNet with a GDC output (Chen et al., 2018)."""
    return MobileFaceNet(embedding_dim=embedding_dim, **kwargs)
